/**
Who is at the other end of a connection: SO_PEERCRED (pid, uid, gid) from the kernel, then, best
effort, the caller's supplementary groups and executable from /proc. The kernel's answer is the
one that counts; /proc is read once, at accept, and a caller that has already exited just has
fewer details in the log.
*/
import {readFileSync, readlinkSync} from 'node:fs';
import type net from 'node:net';
import {peerCredentials} from './native.js';
import type {Caller} from './policy.js';
import {userName} from './system.js';

/** For a connection whose credentials cannot be read: matches no user or group rule. */
const unknownCaller: Caller = {pid: 0, uid: -1, gid: -1, groups: [], userName: '?', exe: undefined};

/** uid → name: NSS may be slow (LDAP), and a broker connects again and again with the same uid. */
const names = new Map<number, {name: string; at: number}>();
const nameTtlMs = 60_000;

function cachedUserName(uid: number): string {
	const now = Date.now();
	const cached = names.get(uid);
	if (cached && now - cached.at < nameTtlMs) {
		return cached.name;
	}

	const name = userName(uid);
	if (names.size > 1000) {
		names.clear();
	}

	names.set(uid, {name, at: now});
	return name;
}

export function identifyCaller(socket: net.Socket): Caller {
	const credentials = peerCredentials(socket);
	if (!credentials) {
		return unknownCaller;
	}

	const {pid, uid, gid} = credentials;
	let groups: number[] = [];
	let exe: string | undefined;
	try {
		const status = readFileSync(`/proc/${pid}/status`, 'latin1');
		groups = /^Groups:(.*)$/m.exec(status)?.[1]?.trim().split(/\s+/).filter(Boolean).map(Number) ?? [];
		exe = readlinkSync(`/proc/${pid}/exe`);
	} catch {
		// Gone already, or /proc is not ours to read: the kernel's credentials suffice.
	}

	return {pid, uid, gid, groups, userName: cachedUserName(uid), exe};
}
