/**
The C worker on its own, spoken to over its pipes as the daemon does, on a real PAM stack.
*/
import {spawn, type ChildProcessByStdio} from 'node:child_process';
import {mkdtempSync, readFileSync, rmSync} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type {Readable, Writable} from 'node:stream';
import {afterAll, beforeAll, describe, expect, it} from 'vitest';
import {createPamSandbox, matrixStack, type PamSandbox} from '../../src/sandbox.js';
import {decodeResponse, encodeRequest, ResponseReader, type WorkerResult} from '../../src/worker-protocol.js';
import {alice, carol} from '../fixtures/users.js';
import {repositoryRoot} from '../helpers/daemon.js';

const workerPath = path.join(repositoryRoot, 'build/pam-authservice-worker');
const checkRuser = path.join(repositoryRoot, 'test/fixtures/check-ruser.sh');

const chatty = {user: 'chatty', password: 'chatty-Pa55-verbose', service: 'chatty'};
const remote = {user: 'remote', password: 'remote-Pa55-ruser', service: 'ruser'};
let directory: string;
let sandbox: PamSandbox;

beforeAll(() => {
	directory = mkdtempSync(path.join(os.tmpdir(), 'pam-authservice-worker-'));
	// pam_matrix lets each user into one service only, so each service has its own users.
	sandbox = createPamSandbox({directory, users: [alice, carol, {user: 'echo', password: 'echo', service: 'echo'}, chatty, remote, {...alice, user: 'fay', service: 'faildelay'}], services: {
		x2gobroker: matrixStack,
		denied: 'auth required ${matrix}\naccount required ${lib}/pam_deny.so\n',
		faildelay: 'auth optional ${lib}/pam_faildelay.so delay=1000000\nauth required ${matrix}\naccount required ${matrix}\n',
		// `echo`: pam_matrix asks with an echo-on prompt, which the worker answers with the user name.
		echo: 'auth required ${matrix} echo\naccount required ${matrix}\n',
		// `verbose`: pam_matrix sends info and error messages besides its prompt.
		chatty: 'auth required ${matrix} verbose\naccount required ${matrix} verbose\n',
		ruser: `auth required \${lib}/pam_exec.so quiet ${checkRuser} broker\nauth required \${matrix}\naccount required \${matrix}\n`,
	}});
});

afterAll(() => {
	rmSync(directory, {recursive: true, force: true});
});

type Worker = ChildProcessByStdio<Writable, Readable, null> & {results: WorkerResult[]; next(): Promise<WorkerResult>; exit: Promise<number | null>};

function startWorker(): Worker {
	const child = spawn(workerPath, [], {env: {...process.env, ...sandbox.environment}, stdio: ['pipe', 'pipe', 'ignore']}) as Worker;
	const reader = new ResponseReader();
	const waiting: Array<(result: WorkerResult) => void> = [];
	child.results = [];
	child.stdout.on('data', (chunk: Buffer) => {
		for (const payload of reader.push(chunk)) {
			const result = decodeResponse(payload);
			child.results.push(result);
			waiting.shift()?.(result);
		}
	});
	child.next = async () => new Promise(resolve => waiting.push(resolve));
	child.exit = new Promise(resolve => child.on('exit', code => resolve(code)));
	return child;
}

async function check(service: string, user: string, password: string | Buffer, ruser = ''): Promise<WorkerResult> {
	const worker = startWorker();
	const result = worker.next();
	worker.stdin.end(encodeRequest({service: Buffer.from(service), user: Buffer.from(user), password: Buffer.from(password), ruser: Buffer.from(ruser)}));
	const answer = await result;
	expect(await worker.exit).toBe(0);
	return answer;
}

describe('a check', () => {
	it('passes with the right password, through pam_authenticate and pam_acct_mgmt', async () => {
		expect(await check('x2gobroker', alice.user, alice.password)).toMatchObject({pamCode: 0, step: 'none', text: 'Success', delayUs: 0});
	});

	it('fails with a wrong password, at pam_authenticate, with its PAM text', async () => {
		const result = await check('x2gobroker', alice.user, 'wrong-Pa55-worker');
		expect(result).toMatchObject({step: 'pam_authenticate', text: 'Authentication failure'});
		expect(result.pamCode).not.toBe(0);
	});

	it('fails when the account section denies, at pam_acct_mgmt', async () => {
		expect(await check('denied', alice.user, alice.password)).toMatchObject({step: 'pam_acct_mgmt'});
	});

	it('never truncates: 127 right bytes pass, one more byte or 512 bytes fail', async () => {
		expect((await check('x2gobroker', carol.user, carol.password)).step).toBe('none');
		expect((await check('x2gobroker', carol.user, `${carol.password}X`)).step).toBe('pam_authenticate');
		expect((await check('x2gobroker', carol.user, `${carol.password}${'X'.repeat(385)}`)).step).toBe('pam_authenticate');
	});

	it('refuses a field with a NUL byte instead of cutting it there', async () => {
		expect(await check('x2gobroker', alice.user, Buffer.from(`${alice.password}\0junk`))).toMatchObject({step: 'request', text: 'field contains a NUL byte'});
	});

	it('reports the failure delay a module asks for instead of sleeping it', async () => {
		const started = performance.now();
		const result = await check('faildelay', 'fay', 'wrong-Pa55-worker');
		expect(performance.now() - started).toBeLessThan(500);
		// libpam randomises the delay by up to half either way (_pam_compute_delay in pam_delay.c).
		expect(result.delayUs).toBeGreaterThanOrEqual(500_000);
		expect(result.delayUs).toBeLessThanOrEqual(1_500_000);
		expect((await check('faildelay', 'nobody-at-all', 'x')).delayUs).toBeGreaterThan(0);
	});

	it('fails for a service with no PAM file (the sandbox\'s `other` denies)', async () => {
		expect((await check('no-such-service', alice.user, alice.password)).step).not.toBe('none');
	});
});

describe('the conversation', () => {
	it('answers an echo-on prompt with the user name, never the password', async () => {
		expect((await check('echo', 'echo', 'not-the-user-name')).step).toBe('none');
		const result = await check('echo', 'echo-other', 'echo');
		expect(result.step).not.toBe('none');
		expect(result.messages[0]?.style).toBe('prompt_echo_on');
	});

	it('keeps the modules\' info and error messages for the log', async () => {
		const passed = await check('chatty', chatty.user, chatty.password);
		expect(passed.step).toBe('none');
		expect(passed.messages).toEqual([{style: 'prompt_echo_off', text: 'Password: '}, {style: 'info', text: 'Authentication succeeded'}]);
		const failed = await check('chatty', chatty.user, 'wrong-Pa55-worker');
		expect(failed.messages.some(message => message.style === 'error')).toBe(true);
	});

	it('sets PAM_RUSER to the caller the daemon names', async () => {
		expect((await check('ruser', remote.user, remote.password, 'broker')).step).toBe('none');
		expect((await check('ruser', remote.user, remote.password, 'someone-else')).step).toBe('pam_authenticate');
		expect((await check('ruser', remote.user, remote.password)).step).toBe('pam_authenticate');
	});
});

describe('the worker process', () => {
	it('runs many checks, pipelined, and answers them in order', async () => {
		const worker = startWorker();
		const passwords = [alice.password, 'wrong-1-Pa55', alice.password, 'wrong-2-Pa55', alice.password];
		worker.stdin.end(Buffer.concat(passwords.map(password => encodeRequest({service: Buffer.from('x2gobroker'), user: Buffer.from(alice.user), password: Buffer.from(password)}))));
		expect(await worker.exit).toBe(0);
		expect(worker.results.map(result => result.step)).toEqual(['none', 'pam_authenticate', 'none', 'pam_authenticate', 'none']);
	});

	it.each([
		['a frame over 65 536 bytes', (() => {
			const frame = Buffer.alloc(8);
			frame.writeUInt32LE(65_537);
			return frame;
		})()],
		['a frame cut short', encodeRequest({service: Buffer.from('x2gobroker'), user: Buffer.from('alice'), password: Buffer.from('x')}).subarray(0, 20)],
		['fields that overrun the frame', Buffer.from([12, 0, 0, 0, 200, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8])],
		['three fields instead of four', (() => {
			const fields = [Buffer.from('x2gobroker'), Buffer.from('alice'), Buffer.from('x')];
			const payload = Buffer.concat(fields.flatMap(field => [Buffer.from(Uint32Array.of(field.length).buffer), field]));
			return Buffer.concat([Buffer.from(Uint32Array.of(payload.length).buffer), payload]);
		})()],
	])('exits with code 3 on %s', async (_name, bytes) => {
		const worker = startWorker();
		worker.stdin.end(bytes);
		expect(await worker.exit).toBe(3);
		expect(worker.results).toEqual([]);
	});

	it('is not dumpable and holds no password in its command line', async () => {
		const worker = startWorker();
		const exited = worker.exit;
		const pending = worker.next();
		worker.stdin.write(encodeRequest({service: Buffer.from('x2gobroker'), user: Buffer.from(alice.user), password: Buffer.from(alice.password)}));
		await pending;
		expect(readFileSync(`/proc/${worker.pid}/cmdline`, 'latin1')).not.toContain(alice.password);
		// A non-dumpable process's /proc files belong to root, whoever runs it; its core limit is 0.
		expect(readFileSync(`/proc/${worker.pid}/limits`, 'latin1')).toMatch(/Max core file size\s+0\s+0/);
		worker.stdin.end();
		expect(await exited).toBe(0);
	});

	it('runs as SCHED_BATCH: woken by a request, it does not preempt the daemon', async () => {
		const worker = startWorker();
		const exited = worker.exit;
		const pending = worker.next();
		worker.stdin.write(encodeRequest({service: Buffer.from('x2gobroker'), user: Buffer.from(alice.user), password: Buffer.from(alice.password)}));
		expect(await pending).toMatchObject({pamCode: 0, step: 'none'});
		// The 41st field of /proc/PID/stat is the policy: 3 is SCHED_BATCH.
		const fields = readFileSync(`/proc/${worker.pid}/stat`, 'latin1').split(') ')[1]!.split(' ');
		expect(fields[41 - 3]).toBe('3');
		worker.stdin.end();
		expect(await exited).toBe(0);
	});

	it('dies with its parent, even while its stdin stays open', async () => {
		// The worker's stdin is our pipe, which stays open: only PR_SET_PDEATHSIG can end it.
		const script = `const w = require('child_process').spawn(process.argv[1], [], {stdio: ['inherit', 'ignore', 'ignore']}); console.log(w.pid); setInterval(() => {}, 1000);`;
		const parent = spawn(process.execPath, ['-e', script, workerPath], {env: {...process.env, ...sandbox.environment}, stdio: ['pipe', 'pipe', 'ignore']});
		const pid = Number(await new Promise<string>(resolve => parent.stdout.once('data', chunk => resolve(String(chunk)))));
		await new Promise(resolve => setTimeout(resolve, 100));
		expect(() => process.kill(pid, 0)).not.toThrow();
		parent.kill('SIGKILL');
		await new Promise(resolve => setTimeout(resolve, 300));
		// Gone, or dead and waiting to be reaped by whoever adopted it.
		const state = (() => {
			try {
				return readFileSync(`/proc/${pid}/stat`, 'latin1').split(') ')[1]?.[0];
			} catch {
				return 'gone';
			}
		})();
		expect(['gone', 'Z']).toContain(state);
		parent.stdin.destroy();
	});
});
