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
Who a process is, for a second: a broker that connects for every check (as x2gobroker's own client
does), or a flood of connections from one process, would otherwise cost two /proc reads and a
name lookup a connection. Keyed by pid, and taken only when the kernel's uid and gid still match,
so that a recycled pid of another user is never taken for the old one.
*/
const callers = new Map<number, {caller: Caller; at: number}>();
const callerTtlMs = 1000;

function procDetails(pid: number): {groups: number[]; exe: string | undefined} {
	let groups: number[] = [];
	let exe: string | undefined;
	try {
		const status = readFileSync(`/proc/${pid}/status`, 'latin1');
		groups = /^Groups:(.*)$/m.exec(status)?.[1]?.trim().split(/\s+/).filter(Boolean).map(Number) ?? [];
		exe = readlinkSync(`/proc/${pid}/exe`);
	} catch {
		// Gone already, or /proc is not ours to read: the kernel's credentials suffice.
	}

	return {groups, exe};
}

export function identifyCaller(socket: net.Socket): Caller {
	const credentials = peerCredentials(socket);
	if (!credentials) {
		return unknownCaller;
	}

	const {pid, uid, gid} = credentials;
	const now = performance.now();
	const cached = callers.get(pid);
	if (cached && cached.caller.uid === uid && cached.caller.gid === gid && now - cached.at < callerTtlMs) {
		return cached.caller;
	}

	const {groups, exe} = procDetails(pid);
	const caller: Caller = {pid, uid, gid, groups, userName: cachedUserName(uid), exe};
	if (callers.size >= 10_000) {
		callers.clear();
	}

	callers.set(pid, {caller, at: now});
	return caller;
}
