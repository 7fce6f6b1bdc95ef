/**
The only importer of the project's Node-API addon (`native/node-addon.c`): SO_PEERCRED and
PR_SET_DUMPABLE, which Node.js has no API for.
*/
import {createRequire} from 'node:module';
import type net from 'node:net';

type Addon = {
	/** Writes pid, uid and gid into `out`. */
	peerCredentials(fd: number, out: Uint32Array): void;
	setDumpable(dumpable: boolean): void;
	isDumpable(): boolean;
	sendDatagram(path: string, message: string): void;
};

export type PeerCredentials = {
	readonly pid: number;
	readonly uid: number;
	readonly gid: number;
};

// Built by `make -C native` beside the worker; the same relative path from src/ and from dist/.
const addon = createRequire(import.meta.url)('../build/pam_authservice_native.node') as Addon;

/** Where the addon writes pid, uid and gid: one array for every call, read at once. */
const credentials = new Uint32Array(3);

/**
The credentials the kernel recorded when the peer connected (SO_PEERCRED).
@returns `undefined` when the socket has no file descriptor any more (it closed).
*/
export function peerCredentials(socket: net.Socket): PeerCredentials | undefined {
	// `_handle.fd` is internal to Node, but has been there, unchanged, for every Unix socket since
	// Node 0.x; net.Socket offers no public way to the descriptor.
	const fd = (socket as unknown as {_handle?: {fd?: number}})._handle?.fd;
	if (fd === undefined || fd < 0) {
		return undefined;
	}

	try {
		addon.peerCredentials(fd, credentials);
	} catch {
		return undefined;
	}

	return {pid: credentials[0]!, uid: credentials[1]!, gid: credentials[2]!};
}

/** Whether this process may dump core or be ptraced by its uid (prctl PR_SET_DUMPABLE). */
export function setDumpable(dumpable: boolean): void {
	addon.setDumpable(dumpable);
}

export function isDumpable(): boolean {
	return addon.isDumpable();
}

/** Send one datagram to a Unix socket (`@name` for an abstract one): sd_notify's transport. */
export function sendDatagram(path: string, message: string): void {
	addon.sendDatagram(path, message);
}
