/**
The daemon as systemd and the original's scripts run it: socket activation, readiness
notification, the configuration file and its reload, log reopening, --daemonize and --pidfile.
*/
import {execFile, spawn, spawnSync, type ChildProcess} from 'node:child_process';
import {existsSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {setTimeout as delay} from 'node:timers/promises';
import {promisify} from 'node:util';
import {afterEach, beforeEach, describe, expect, it} from 'vitest';
import {createPamSandbox, type PamSandbox} from '../../src/sandbox.js';
import {alice, dave, services, slowUsers, users, wrongPassword} from '../fixtures/users.js';
import {closedByServer, connect, Daemon, daemonPath, readLines, rememberPassword, waitFor} from '../helpers/daemon.js';

let directory: string;
let sandbox: PamSandbox;
const children: ChildProcess[] = [];
const running: Daemon[] = [];

beforeEach(() => {
	directory = mkdtempSync(path.join(os.tmpdir(), 'pam-authservice-systemd-'));
	sandbox = createPamSandbox({directory, users, services});
});

afterEach(async () => {
	for (const child of children.splice(0)) {
		child.kill('SIGKILL');
	}

	await Promise.all(running.splice(0).map(async daemon => daemon.stop()));
	rmSync(directory, {recursive: true, force: true});
});

const me = ['--owner', String(process.getuid?.()), '--group', String(process.getgid?.())];

async function ask(socketPath: string, user: string, password: string, service = 'x2gobroker'): Promise<string> {
	rememberPassword(password);
	const socket = await connect(socketPath);
	socket.write(`${user}\r${password}\r${service}\n`);
	const [answer] = await readLines(socket, 1);
	socket.destroy();
	return answer ?? '';
}


describe('socket activation', () => {
	it('serves on the socket systemd passes and never removes it', async () => {
		const socketPath = path.join(directory, 'activated.socket');
		const environment = Object.entries(sandbox.environment).flatMap(([key, value]) => ['-E', `${key}=${value}`]);
		const child = spawn('systemd-socket-activate', ['-l', socketPath, '--fdname=authservice', ...environment, process.execPath, daemonPath, '--config', '/dev/null', '--socket-file', path.join(directory, 'never-bound.socket'), ...me], {stdio: ['ignore', 'pipe', 'pipe']});
		children.push(child);
		let log = '';
		let announced = '';
		child.stdout.on('data', chunk => {
			log += String(chunk);
		});
		child.stderr.on('data', chunk => {
			announced += String(chunk);
		});
		// Not the socket file's existence: it appears at bind(), before listen(), and a connection
		// in between is refused. systemd-socket-activate says so once it listens.
		await waitFor(() => announced.includes(`Listening on ${socketPath}`));
		// systemd-socket-activate starts the daemon at the first connection.
		expect(await ask(socketPath, alice.user, alice.password)).toBe('ok');
		expect(await ask(socketPath, alice.user, wrongPassword)).toBe('fail');
		expect(log).toContain('fd 3 from systemd');
		expect(existsSync(path.join(directory, 'never-bound.socket'))).toBe(false);
		child.kill('SIGTERM');
		// 'close': the last log lines may still be in the pipe when the process exits.
		await new Promise(resolve => child.once('close', resolve));
		expect(log).toContain('"msg":"stopped"');
		expect(statSync(socketPath).isSocket()).toBe(true);
	});
});

describe('readiness notification', () => {
	it('sends READY=1 once serving and STOPPING=1 on SIGTERM to NOTIFY_SOCKET', async () => {
		const notifySocket = path.join(directory, 'notify.socket');
		// Node has no datagram Unix sockets: socat receives them for the test.
		const receiver = spawn('socat', ['-u', `UNIX-RECV:${notifySocket}`, 'STDOUT'], {stdio: ['ignore', 'pipe', 'ignore']});
		children.push(receiver);
		let received = '';
		receiver.stdout.on('data', chunk => {
			received += `${String(chunk)}\n`;
		});
		await waitFor(() => existsSync(notifySocket));
		const daemon = await Daemon.start({users, services, env: {NOTIFY_SOCKET: notifySocket, WATCHDOG_USEC: '200000'}});
		await waitFor(() => received.includes('READY=1'));
		expect(received).toMatch(/STATUS=serving .*: 0 connections/);
		await waitFor(() => received.includes('WATCHDOG=1'));
		await daemon.stop();
		await waitFor(() => received.includes('STOPPING=1'));
		expect(received.indexOf('READY=1')).toBeLessThan(received.indexOf('STOPPING=1'));
	});
});

describe('the configuration file', () => {
	const configPath = () => path.join(directory, 'pam-authservice.conf');

	it('is read with flags > environment > file > defaults', async () => {
		writeFileSync(configPath(), '; a comment\nmax-line-bytes = 2000\nidle-timeout-ms = 5000\nmax-workers = 7\nservices = x2gobroker, denied\n[callers]\ndenied = user:root\n');
		const run = (args: string[], env: Record<string, string> = {}) => spawnSync(process.execPath, [daemonPath, '--config', configPath(), '--check-config', ...args], {encoding: 'utf8', env: {...process.env, ...env}});
		const result = run(['--max-workers', '9'], {PAM_AUTHSERVICE_IDLE_TIMEOUT_MS: '6000'});
		expect(result.status).toBe(0);
		expect(result.stdout).toContain('max-line-bytes = 2000\n');
		expect(result.stdout).toContain('idle-timeout-ms = 6000\n');
		expect(result.stdout).toContain('max-workers = 9\n');
		expect(result.stdout).toContain('max-connections = 1024\n');
		expect(result.stdout).toContain('services = x2gobroker, denied\n');
		expect(result.stdout).toContain('denied = user:root\n');
	});

	it('--check-config names every problem with its key and line, exit 2', () => {
		writeFileSync(configPath(), 'max-line-bytes = 2000\nmax-workers = many\n\nlog-level = loud\nno-such-key = 1\n');
		const result = spawnSync(process.execPath, [daemonPath, '--config', configPath(), '--check-config'], {encoding: 'utf8'});
		expect(result.status).toBe(2);
		const lines = result.stderr.trim().split('\n');
		expect(lines[0]).toBe(`${configPath()}:2: max-workers: must be a whole number, not \`many\``);
		expect(lines[1]).toMatch(new RegExp(`^${configPath()}:4: log-level: must be one of`));
		expect(lines[2]).toBe(`${configPath()}:5: no-such-key: unknown key`);
	});

	it('a missing explicit file is an error; the default one may be absent', () => {
		const result = spawnSync(process.execPath, [daemonPath, '--config', path.join(directory, 'absent.conf'), '--check-config'], {encoding: 'utf8'});
		expect(result.status).toBe(2);
		expect(result.stderr).toContain('cannot read the configuration file');
	});
});

describe('SIGHUP', () => {
	it('re-reads the file without dropping a connection or a check in flight; a bad file is refused', async () => {
		const configPath = path.join(directory, 'reload.conf');
		writeFileSync(configPath, 'services = x2gobroker, slow\n');
		const daemon = await Daemon.start({users, services, servicesFromFile: true, args: ['--config', configPath]});
		running.push(daemon);
		expect(await daemon.ask(dave.user, dave.password, 'denied')).toBe('fail');
		await daemon.waitForLog(entry => entry['reason'] === 'service not allowed');

		const socket = await connect(daemon.socketPath);
		const answers = readLines(socket, 2, 10_000);
		const [slow] = slowUsers;
		rememberPassword(slow!.password);
		socket.write(`${slow!.user}\r${slow!.password}\rslow\n`);
		await delay(100);
		writeFileSync(configPath, 'services = x2gobroker, slow, denied\nlog-level = info\npermissions = 0o600\nmax-log-backlog-bytes = 1048576\n');
		daemon.process.kill('SIGHUP');
		await daemon.waitForLog(entry => entry.msg === 'configuration reloaded');
		const warning = await daemon.waitForLog(entry => String(entry.msg).includes('only at a restart'));
		expect(warning['options']).toEqual(['socketMode', 'maxLogBacklogBytes']);
		expect(statSync(daemon.socketPath).mode & 0o777).toBe(0o660);
		socket.write(`${alice.user}\r${alice.password}\rx2gobroker\n`);
		expect(await answers).toEqual(['ok', 'ok']);
		socket.destroy();
		expect(await daemon.ask(dave.user, dave.password, 'denied')).toBe('fail');
		await daemon.waitForLog(entry => String(entry['reason']).startsWith('pam_acct_mgmt'));

		writeFileSync(configPath, 'services = x2gobroker\nmax-workers = lots\n');
		daemon.process.kill('SIGHUP');
		const refused = await daemon.waitForLog(entry => String(entry.msg).startsWith('reload refused'));
		expect(refused['problems']).toEqual([`${configPath}:2: max-workers: must be a whole number, not \`lots\``]);
		expect(await daemon.ask(alice.user, alice.password)).toBe('ok');
		expect(existsSync(daemon.socketPath)).toBe(true);
	});
});

describe('SIGHUP and the time-outs', () => {
	it('a shorter idle-timeout-ms applies at once to connections already open', async () => {
		const configPath = path.join(directory, 'idle.conf');
		writeFileSync(configPath, 'idle-timeout-ms = 60000\n');
		const daemon = await Daemon.start({users, services, args: ['--config', configPath]});
		running.push(daemon);
		const socket = await connect(daemon.socketPath);
		expect(await ask(daemon.socketPath, alice.user, alice.password)).toBe('ok');
		writeFileSync(configPath, 'idle-timeout-ms = 300\n');
		daemon.process.kill('SIGHUP');
		await daemon.waitForLog(entry => entry.msg === 'configuration reloaded');
		// Open for longer than 300 ms by now: closed at the reload's first look, not a minute later.
		expect(await closedByServer(socket, 3000)).toBe(true);
	});
});

describe('SIGUSR1', () => {
	it('reopens the log file, after logrotate has moved it', async () => {
		const logFile = path.join(directory, 'logs', 'pam-authservice.log');
		const socketPath = path.join(directory, 'usr1.socket');
		const child = spawn(process.execPath, [daemonPath, '--config', '/dev/null', '--socket-file', socketPath, '--log-file', logFile, ...me], {env: {...process.env, ...sandbox.environment}, stdio: 'ignore'});
		children.push(child);
		await waitFor(() => existsSync(logFile) && readFileSync(logFile, 'utf8').includes('"serving"'));
		renameSync(logFile, `${logFile}.1`);
		child.kill('SIGUSR1');
		await waitFor(() => existsSync(logFile));
		expect(await ask(socketPath, alice.user, alice.password)).toBe('ok');
		await waitFor(() => readFileSync(logFile, 'utf8').includes('"request"'));
		expect(readFileSync(`${logFile}.1`, 'utf8')).not.toContain('"request"');
	});
});

describe('a log file that cannot be written', () => {
	it('does not stop the answers, is said once on standard error, and does not stop the daemon from stopping', async () => {
		// Every write to /dev/full fails with ENOSPC, as on a full disk.
		const logFile = path.join(directory, 'full.log');
		symlinkSync('/dev/full', logFile);
		const socketPath = path.join(directory, 'full.socket');
		const child = spawn(process.execPath, [daemonPath, '--config', '/dev/null', '--socket-file', socketPath, '--log-file', logFile, ...me], {env: {...process.env, ...sandbox.environment}, stdio: ['ignore', 'ignore', 'pipe']});
		children.push(child);
		let stderr = '';
		child.stderr.setEncoding('utf8').on('data', (text: string) => {
			stderr += text;
		});
		const exited = new Promise<number | null>(resolve => {
			child.on('exit', code => {
				resolve(code);
			});
		});
		await waitFor(async () => ask(socketPath, alice.user, alice.password).then(answer => answer === 'ok', () => false));
		// Apart by more than a batch's wait: each answer's log line is a write of its own, and fails.
		for (let round = 0; round < 4; round++) {
			// eslint-disable-next-line no-await-in-loop
			await delay(150);
			// eslint-disable-next-line no-await-in-loop
			expect(await ask(socketPath, alice.user, alice.password)).toBe('ok');
			// eslint-disable-next-line no-await-in-loop
			expect(await ask(socketPath, dave.user, wrongPassword)).toBe('fail');
		}

		expect(stderr.match(/cannot write the log/g)).toHaveLength(1);
		expect(stderr).toContain('ENOSPC');
		child.kill('SIGTERM');
		expect(await exited).toBe(0);
	});

	it('is a failure to start, said on standard error, when the file cannot be opened at all', () => {
		// A folder that is a file: no log can be made under it.
		const notAFolder = path.join(directory, 'not-a-folder');
		writeFileSync(notAFolder, '');
		const logFile = path.join(notAFolder, 'pam-authservice.log');
		const result = spawnSync(process.execPath, [daemonPath, '--config', '/dev/null', '--socket-file', path.join(directory, 'never.socket'), '--log-file', logFile, ...me], {encoding: 'utf8', env: {...process.env, ...sandbox.environment}, timeout: 20_000});
		expect(result.status).toBe(1);
		expect(result.stderr).toContain(`cannot open the log file ${logFile}: E`);
		expect(existsSync(path.join(directory, 'never.socket'))).toBe(false);
	});
});

describe('the original\'s scripts: --daemonize and --pidfile', () => {
	it('returns once the daemon serves, writes the pid, refuses a second one, removes the file at exit', async () => {
		const socketPath = path.join(directory, 'forking.socket');
		const pidFile = path.join(directory, 'run', 'pam-authserviced.pid');
		const args = [daemonPath, '--config', '/dev/null', '-D', '-P', pidFile, '-L', path.join(directory, 'log'), '-s', socketPath, ...me];
		const {stdout} = await promisify(execFile)(process.execPath, args, {env: {...process.env, ...sandbox.environment}});
		expect(stdout).toBe('');
		// The parent has exited: the daemon must already serve.
		expect(await ask(socketPath, alice.user, alice.password)).toBe('ok');
		const pid = Number(readFileSync(pidFile, 'utf8'));
		expect(() => process.kill(pid, 0)).not.toThrow();
		expect(readFileSync(path.join(directory, 'log', 'pam-authservice.log'), 'utf8')).toContain('"serving"');

		const second = spawnSync(process.execPath, [daemonPath, '--config', '/dev/null', '-P', pidFile, '-s', `${socketPath}.2`, ...me], {encoding: 'utf8', env: {...process.env, ...sandbox.environment}});
		expect(second.status).toBe(1);
		expect(second.stdout + second.stderr).toContain(`names process ${pid}, which is running`);

		process.kill(pid, 'SIGTERM');
		await waitFor(() => !existsSync(pidFile));
		await waitFor(() => !existsSync(socketPath));
	});
});
