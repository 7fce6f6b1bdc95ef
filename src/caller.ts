/**
Who is at the other end of a connection: SO_PEERCRED (pid, uid, gid) from the kernel, then, best
effort, the caller's supplementary groups and executable from /proc. The kernel's answer is the
one that counts; /proc is read once, at accept, and a caller that has already exited just has
fewer details in the log.
*/
import {readFileSync, readlinkSync} from 'node:fs';
import type net from 'node:net';
import {performance} from 'node:perf_hooks';
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

/**
What /proc said of a process, for a second: a broker that connects for every check (as
x2gobroker's own client does), or a flood of connections from one process, would otherwise cost
two /proc reads a connection. Keyed by uid and gid too, so that a recycled pid of another user is
never taken for the old one.
*/
const details = new Map<string, {groups: number[]; exe: string | undefined; at: number}>();
const detailsTtlMs = 1000;

function procDetails(pid: number, uid: number, gid: number): {groups: number[]; exe: string | undefined} {
	const key = `${pid}:${uid}:${gid}`;
	const now = performance.now();
	const cached = details.get(key);
	if (cached && now - cached.at < detailsTtlMs) {
		return cached;
	}

	let groups: number[] = [];
	let exe: string | undefined;
	try {
		const status = readFileSync(`/proc/${pid}/status`, 'latin1');
		groups = /^Groups:(.*)$/m.exec(status)?.[1]?.trim().split(/\s+/).filter(Boolean).map(Number) ?? [];
		exe = readlinkSync(`/proc/${pid}/exe`);
	} catch {
		// Gone already, or /proc is not ours to read: the kernel's credentials suffice.
	}

	if (details.size >= 10_000) {
		details.clear();
	}

	const entry = {groups, exe, at: now};
	details.set(key, entry);
	return entry;
}

export function identifyCaller(socket: net.Socket): Caller {
	const credentials = peerCredentials(socket);
	if (!credentials) {
		return unknownCaller;
	}

	const {pid, uid, gid} = credentials;
	const {groups, exe} = procDetails(pid, uid, gid);
	return {pid, uid, gid, groups, userName: cachedUserName(uid), exe};
}
