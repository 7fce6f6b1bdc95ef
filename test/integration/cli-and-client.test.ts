/**
The CLI and the client module against the built daemon, as ops and brokers use them.
*/
import {execFile, spawn} from 'node:child_process';
import {promisify} from 'node:util';
import {afterAll, beforeAll, describe, expect, it} from 'vitest';
import {authenticate, AuthServiceClient} from '../../src/index.js';
import {alice, crowd, services, users, wrongPassword} from '../fixtures/users.js';
import {clientCliPath, Daemon, rememberPassword} from '../helpers/daemon.js';

let daemon: Daemon;

beforeAll(async () => {
	daemon = await Daemon.start({users, services});
});

afterAll(async () => {
	await daemon?.stop();
});

/** Run the built CLI with `input` on its standard input. */
async function cli(args: string[], input: string): Promise<{code: number | null; stdout: string; stderr: string}> {
	const child = spawn(process.execPath, [clientCliPath, ...args], {stdio: ['pipe', 'pipe', 'pipe']});
	let stdout = '';
	let stderr = '';
	child.stdout.on('data', chunk => {
		stdout += String(chunk);
	});
	child.stderr.on('data', chunk => {
		stderr += String(chunk);
	});
	child.stdin.end(input);
	const code = await new Promise<number | null>(resolve => child.on('exit', resolve));
	return {code, stdout, stderr};
}

describe('pam-authservice check', () => {
	it('prints ok and exits 0 for the right password, fail and 1 for a wrong one', async () => {
		rememberPassword(alice.password);
		expect(await cli(['check', '--user', alice.user, '--socket', daemon.socketPath, '--password-stdin'], `${alice.password}\n`)).toMatchObject({code: 0, stdout: 'ok\n'});
		expect(await cli(['check', '--user', alice.user, '--socket', daemon.socketPath, '--password-stdin'], `${wrongPassword}\n`)).toMatchObject({code: 1, stdout: 'fail\n'});
	});

	it('says in one line, exit 3, when there is no daemon', async () => {
		const result = await cli(['check', '--user', alice.user, '--socket', `${daemon.socketPath}.missing`, '--password-stdin'], `${alice.password}\n`);
		expect(result.code).toBe(3);
		expect(result.stderr.trim().split('\n')).toHaveLength(1);
		expect(result.stderr).not.toContain(alice.password);
	});
});

describe('pam-authservice raw', () => {
	it('passes bytes to the socket and answers to standard output, as socat would', async () => {
		rememberPassword(alice.password);
		const result = await cli(['raw', '--socket', daemon.socketPath], `alice\r${alice.password}\rx2gobroker\nalice\r${wrongPassword}\rx2gobroker\n`);
		expect(result).toMatchObject({code: 0, stdout: 'ok\nfail\n'});
	});

	it('works with socat itself', async () => {
		const {stdout} = await promisify(execFile)('sh', ['-c', `printf 'alice\\r%s\\rx2gobroker\\n' "$PW" | socat -t 5 - UNIX-CONNECT:${daemon.socketPath}`], {env: {...process.env, PW: alice.password}});
		expect(stdout).toBe('ok\n');
	});
});

describe('the client module', () => {
	it('authenticate() resolves true for ok and false for fail', async () => {
		expect(await authenticate(alice.user, alice.password, 'x2gobroker', {socketPath: daemon.socketPath})).toBe(true);
		expect(await authenticate(alice.user, wrongPassword, 'x2gobroker', {socketPath: daemon.socketPath})).toBe(false);
	});

	it('AuthServiceClient pipelines many checks on one connection', async () => {
		const client = new AuthServiceClient({socketPath: daemon.socketPath});
		// Distinct users: the daemon lines up requests for one user one behind the other.
		const answers = await Promise.all(crowd.flatMap(({user, password}) => [client.authenticate(user, password), client.authenticate(`not-${user}`, wrongPassword)]));
		expect(answers).toEqual(crowd.flatMap(() => [true, false]));
		await client.close();
	});
});
