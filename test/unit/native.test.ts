import {execFile, spawn} from 'node:child_process';
import {chmodSync, closeSync, mkdtempSync, openSync, rmSync} from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {promisify} from 'node:util';
import {createRequire} from 'node:module';
import {afterEach, beforeEach, describe, expect, it} from 'vitest';
import {isDumpable, peerCredentials, type PeerCredentials} from '../../src/native.js';

const isRoot = process.getuid?.() === 0;
let directory: string;
let server: net.Server;
let socketPath: string;
let accepted: Promise<net.Socket>;

beforeEach(async () => {
	directory = mkdtempSync(path.join(os.tmpdir(), 'pam-authservice-native-'));
	socketPath = path.join(directory, 'socket');
	server = net.createServer();
	accepted = new Promise(resolve => server.once('connection', resolve));
	await new Promise<void>(resolve => server.listen(socketPath, resolve));
});

afterEach(async () => {
	await new Promise(resolve => server.close(resolve));
	rmSync(directory, {recursive: true, force: true});
});

/** Connect from a child process that waits, and read the credentials of that connection. */
async function credentialsOfChild(command: string[]): Promise<{child: number; credentials: PeerCredentials | undefined}> {
	const script = `require('net').connect(process.argv[1], () => setTimeout(() => {}, 5000))`;
	const child = spawn(command[0]!, [...command.slice(1), process.execPath, '-e', script, socketPath], {stdio: 'ignore'});
	const socket = await accepted;
	const credentials = peerCredentials(socket);
	child.kill();
	socket.destroy();
	return {child: child.pid!, credentials};
}

describe('peerCredentials', () => {
	it('reads the connecting process\'s pid, uid and gid', async () => {
		const client = net.connect(socketPath);
		const socket = await accepted;
		expect(peerCredentials(socket)).toEqual({pid: process.pid, uid: process.getuid?.(), gid: process.getgid?.()});
		client.destroy();
		socket.destroy();
	});

	it('tells a child process by its own pid', async () => {
		const {child, credentials} = await credentialsOfChild(['env']);
		// `env` execs node in the same process: the pid is the child's.
		expect(credentials?.pid).toBe(child);
	});

	it.skipIf(!isRoot)('tells another uid (as root, a client run as nobody)', async () => {
		chmodSync(directory, 0o755);
		chmodSync(socketPath, 0o777);
		const {credentials} = await credentialsOfChild(['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups']);
		expect(credentials).toMatchObject({uid: 65_534, gid: 65_534});
	});

	it('answers undefined for a closed socket', async () => {
		const client = net.connect(socketPath);
		const socket = await accepted;
		socket.destroy();
		client.destroy();
		expect(peerCredentials(socket)).toBeUndefined();
	});

	it('makes the raw addon throw a typed error for a bad descriptor or argument', () => {
		const addon = createRequire(import.meta.url)('../../build/pam_authservice_native.node') as {peerCredentials(fd: unknown, out?: unknown): unknown};
		const out = new Uint32Array(3);
		expect(() => addon.peerCredentials(9999, out)).toThrow(expect.objectContaining({code: 'EBADF'}));
		const file = openSync(path.join(directory, 'plain-file'), 'w');
		expect(() => addon.peerCredentials(file, out)).toThrow(expect.objectContaining({code: 'ENOTSOCK'}));
		closeSync(file);
		expect(() => addon.peerCredentials('3', out)).toThrow(TypeError);
		// Where the credentials go must be a Uint32Array with room for all three.
		for (const wrong of [undefined, [0, 0, 0], new Int32Array(3), new Uint32Array(2)]) {
			expect(() => addon.peerCredentials(9999, wrong)).toThrow(TypeError);
		}
	});
});

describe('setDumpable', () => {
	it('turns core dumps and ptrace off for the process, as the daemon does at start', async () => {
		expect(isDumpable()).toBe(true);
		const script = `import('${new URL('../../dist/native.js', import.meta.url).href}').then(n => { n.setDumpable(false); console.log(n.isDumpable()); })`;
		const {stdout} = await promisify(execFile)(process.execPath, ['-e', script]);
		expect(stdout.trim()).toBe('false');
	});
});
