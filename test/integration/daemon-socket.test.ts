/**
The socket's set-up and permissions, and the daemon's command line.
*/
import {execFile, spawnSync} from 'node:child_process';
import {mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync} from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {promisify} from 'node:util';
import {afterEach, describe, expect, it} from 'vitest';
import {alice, services, users} from '../fixtures/users.js';
import {Daemon, daemonPath, isRoot, rememberPassword, waitFor} from '../helpers/daemon.js';

const running: Daemon[] = [];
const folders: string[] = [];

afterEach(async () => {
	await Promise.all(running.splice(0).map(async daemon => daemon.stop()));
	for (const folder of folders.splice(0)) {
		rmSync(folder, {recursive: true, force: true});
	}
});

function folder(): string {
	const created = mkdtempSync(path.join(os.tmpdir(), 'pam-authservice-socket-'));
	folders.push(created);
	return created;
}

/** Run the daemon to its exit (for start-up failures). */
function runDaemon(args: string[], timeoutMs = 10_000): {status: number | null; stderr: string; stdout: string} {
	const result = spawnSync(process.execPath, [daemonPath, ...args], {encoding: 'utf8', timeout: timeoutMs});
	return {status: result.status, stderr: result.stderr, stdout: result.stdout};
}

describe('the command line', () => {
	it.each([
		[['--max-line-bytes', 'lots'], /max-line-bytes/],
		[['--max-connections', '0'], /`maxConnections` option must be a whole number from 1/],
		[['--permissions', '0999'], /`permissions` option must be an octal file mode/],
		[['--min-workers', '5', '--max-workers', '2'], /`minWorkers` option \(5\) cannot be greater than `maxWorkers` \(2\)/],
		[['--services', 'bad service'], /invalid PAM service name/],
		[['--no-such-flag'], /Unknown argument/],
		[['--owner', 'no-such-user-here', '--socket-file', '/tmp/pam-authservice-never/s'], /`owner` option names no user/],
	])('refuses %j with one line naming the option, exit code 2', (args, message) => {
		const result = runDaemon(args);
		expect(result.status).toBe(2);
		expect(result.stderr).toMatch(message);
		expect(result.stderr.trim().split('\n')).toHaveLength(2);
	});

	it('prints its options with --help', () => {
		const result = runDaemon(['--help']);
		expect(result.status).toBe(0);
		for (const flag of ['--socket-file', '--owner', '--group', '--permissions', '--debug', '--debug-interactively', '--services', '--max-line-bytes', '--idle-timeout-ms', '--check-timeout-ms']) {
			expect(result.stdout).toContain(flag);
		}
	});

	it('takes the socket path from X2GOBROKER_AUTHSERVICE_SOCKET', async () => {
		const socketPath = path.join(folder(), 'from-env.socket');
		const child = execFile(process.execPath, [daemonPath, '--owner', String(process.getuid?.()), '--group', String(process.getgid?.())], {env: {...process.env, X2GOBROKER_AUTHSERVICE_SOCKET: socketPath}});
		try {
			await waitFor(() => statSync(socketPath, {throwIfNoEntry: false})?.isSocket() === true);
		} finally {
			child.kill('SIGTERM');
		}
	});
});

describe('socket set-up', () => {
	it('creates the missing folder with the socket mode plus x where r', async () => {
		const daemon = await Daemon.start({users, services, args: ['--permissions', '0o640']});
		running.push(daemon);
		expect(statSync(daemon.socketPath).mode & 0o777).toBe(0o640);
		expect(statSync(path.dirname(daemon.socketPath)).mode & 0o777).toBe(0o750);
	});

	it('accepts the mode as 0660 and 660 too', async () => {
		for (const mode of ['0600', '600']) {
			// eslint-disable-next-line no-await-in-loop
			const daemon = await Daemon.start({users, services, args: ['--permissions', mode]});
			running.push(daemon);
			expect(statSync(daemon.socketPath).mode & 0o777).toBe(0o600);
		}
	});

	it('never removes a path that is not a socket', () => {
		const socketPath = path.join(folder(), 'not-a-socket');
		writeFileSync(socketPath, 'precious');
		const result = runDaemon(['--socket-file', socketPath, '--owner', String(process.getuid?.()), '--group', String(process.getgid?.())]);
		expect(result.status).toBe(1);
		expect(result.stdout).toContain('is not a socket');
		expect(readFileSync(socketPath, 'utf8')).toBe('precious');
	});

	it('refuses to start while a live daemon answers on the socket, which keeps serving', async () => {
		const daemon = await Daemon.start({users, services});
		running.push(daemon);
		const result = runDaemon(['--socket-file', daemon.socketPath, '--owner', String(process.getuid?.()), '--group', String(process.getgid?.())]);
		expect(result.status).toBe(1);
		expect(result.stdout).toContain('Another daemon is already serving');
		expect(await daemon.ask(alice.user, alice.password)).toBe('ok');
	});

	it('replaces a stale socket', async () => {
		const directory = folder();
		const socketPath = path.join(directory, 'stale.socket');
		// A socket file that nobody listens on any more, as a crashed daemon leaves behind.
		const stale = net.createServer();
		await new Promise<void>(resolve => stale.listen(socketPath, resolve));
		mkdirSync(path.join(directory, 'keep'), {recursive: true});
		const copy = path.join(directory, 'keep', 'stale.socket');
		const {renameSync} = await import('node:fs');
		renameSync(socketPath, copy);
		stale.close();
		renameSync(copy, socketPath);
		expect(statSync(socketPath).isSocket()).toBe(true);

		const child = execFile(process.execPath, [daemonPath, '--socket-file', socketPath, '--owner', String(process.getuid?.()), '--group', String(process.getgid?.())]);
		try {
			await waitFor(async () => new Promise(resolve => {
				const probe = net.connect(socketPath, () => {
					probe.destroy();
					resolve(true);
				}).on('error', () => {
					resolve(false);
				});
			}));
		} finally {
			child.kill('SIGTERM');
		}
	});
});

describe('socket permissions (as root)', () => {
	const skip = !isRoot;
	if (skip) {
		console.log('skipping the socket ownership tests: they need root to chown and to run a client as nobody');
	}

	it.skipIf(skip)('gives the socket the owner, group and mode asked for, by name', async () => {
		const daemon = await Daemon.start({users, services, args: ['--owner', 'nobody', '--group', 'nogroup', '--permissions', '0o660']});
		running.push(daemon);
		const stat = statSync(daemon.socketPath);
		expect(stat.uid).toBe(Number(spawnSync('id', ['-u', 'nobody'], {encoding: 'utf8'}).stdout.trim()));
		expect(stat.gid).toBe(Number(spawnSync('getent', ['group', 'nogroup'], {encoding: 'utf8'}).stdout.split(':')[2]));
		expect(stat.mode & 0o777).toBe(0o660);
	});

	const askAsNobody = async (socketPath: string): Promise<string> => {
		rememberPassword(alice.password);
		const script = `const s=require('net').connect(process.argv[1]);s.on('error',e=>{console.log(e.code);});s.on('data',d=>{process.stdout.write(d);s.destroy();});s.write('alice\\r'+process.env.PW+'\\rx2gobroker\\n');`;
		const {stdout} = await promisify(execFile)('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', process.execPath, '-e', script, socketPath], {env: {PW: alice.password}});
		return stdout.trim();
	};

	it.skipIf(skip)('refuses a caller the mode shuts out, and serves one it lets in', async () => {
		const closed = await Daemon.start({users, services, args: ['--permissions', '0o660']});
		running.push(closed);
		// The test folder is root's 0700: open it so that only the socket's own mode decides.
		const open = (daemon: Daemon) => {
			for (const directory of [daemon.directory, path.dirname(daemon.socketPath)]) {
				spawnSync('chmod', ['o+x', directory]);
			}
		};

		open(closed);
		expect(await askAsNobody(closed.socketPath)).toBe('EACCES');

		const opened = await Daemon.start({users, services, args: ['--permissions', '0o666']});
		running.push(opened);
		open(opened);
		expect(await askAsNobody(opened.socketPath)).toBe('ok');
	});
});

