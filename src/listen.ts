/**
Owns the socket path: making its folder, refusing to start beside a live daemon, clearing a stale
socket, and binding so that the socket is never, even for an instant, more open than its mode.
*/
import {constants as fsConstants, promises as fs} from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import {ListenError} from './errors.js';

export type SocketOptions = {
	readonly socketPath: string;
	readonly uid: number;
	readonly gid: number;
	readonly mode: number;
};

/** What identifies the socket we bound, so that we remove only ours at exit. */
export type BoundSocket = {
	readonly dev: number;
	readonly ino: number;
};

/** `r` bits turned into `r` and `x`: a group that may use the socket may enter its folder. */
export function folderModeFor(socketMode: number): number {
	const read = socketMode & 0o444;
	return (socketMode | read >> 2) & 0o777;
}

/**
Listen on `options.socketPath` with `server`.

The socket is bound in a fresh private folder (mode 0700) beside its final path, given its owner,
group and mode there, and only then renamed into place.

@throws {ListenError} When the path is taken by something that is not a stale socket.
*/
export async function listenOnSocket(server: net.Server, options: SocketOptions): Promise<BoundSocket> {
	const folder = path.dirname(options.socketPath);
	await makeFolder(folder, options);
	await clearStaleSocket(options.socketPath);

	const privateFolder = await fs.mkdtemp(path.join(folder, '.pam-authservice-'));
	const privatePath = path.join(privateFolder, 'socket');
	try {
		await listen(server, privatePath);
		await fs.chown(privatePath, options.uid, options.gid);
		await fs.chmod(privatePath, options.mode);
		await fs.rename(privatePath, options.socketPath);
	} catch (error) {
		server.close();
		throw new ListenError(`Cannot listen on ${options.socketPath}: ${(error as Error).message}`, {cause: error});
	} finally {
		await fs.rm(privateFolder, {recursive: true, force: true});
	}

	const {dev, ino} = await fs.stat(options.socketPath);
	return {dev, ino};
}

/** Remove the socket at `socketPath` if it is still the one we bound. */
export async function removeSocket(socketPath: string, bound: BoundSocket): Promise<void> {
	try {
		const stat = await fs.lstat(socketPath);
		if (stat.dev === bound.dev && stat.ino === bound.ino) {
			await fs.unlink(socketPath);
		}
	} catch {
		// Already gone.
	}
}

async function makeFolder(folder: string, options: SocketOptions): Promise<void> {
	try {
		await fs.access(folder, fsConstants.F_OK);
		return;
	} catch {}

	const mode = folderModeFor(options.mode);
	await fs.mkdir(folder, {recursive: true, mode: 0o700});
	await fs.chown(folder, options.uid, options.gid);
	await fs.chmod(folder, mode);
}

async function clearStaleSocket(socketPath: string): Promise<void> {
	let stat;
	try {
		stat = await fs.lstat(socketPath);
	} catch {
		return;
	}

	if (!stat.isSocket()) {
		throw new ListenError(`${socketPath} exists and is not a socket: not removing it`);
	}

	const probe = await probeSocket(socketPath);
	if (probe === 'live') {
		throw new ListenError(`Another daemon is already serving on ${socketPath}: refusing to start`);
	}

	if (probe !== 'stale') {
		throw new ListenError(`Cannot tell whether ${socketPath} is in use (${probe}): not removing it`);
	}

	await fs.unlink(socketPath);
}

/** `live` when something accepts on the socket, `stale` when nothing listens, else the error code. */
async function probeSocket(socketPath: string): Promise<string> {
	return new Promise(resolve => {
		const probe = net.connect(socketPath);
		probe.once('connect', () => {
			probe.destroy();
			resolve('live');
		});
		probe.once('error', (error: NodeJS.ErrnoException) => {
			resolve(error.code === 'ECONNREFUSED' ? 'stale' : error.code ?? error.message);
		});
	});
}

async function listen(server: net.Server, socketPath: string): Promise<void> {
	// A deeper backlog than Node's 511, for a burst of brokers connecting at a login peak
	// (the kernel caps it at net.core.somaxconn).
	return listenWith(server, {path: socketPath, backlog: 4096});
}

/** `server.listen()` as a Promise that drops its error listener once listening. */
export async function listenWith(server: net.Server, options: net.ListenOptions | {fd: number}): Promise<void> {
	return new Promise((resolve, reject) => {
		server.once('error', reject);
		server.listen(options, () => {
			server.off('error', reject);
			resolve();
		});
	});
}
