/**
`build/pam-authservice-worker` spoken to directly over its pipes, on a pam_wrapper sandbox: the
frames, every step a check can stop at, the conversation, the failure delay, and how it exits.

Besides pam_matrix and the system's modules, the sandbox loads `pam_talk.so`, a module compiled
here from the C below: no shipped module sends several messages in one conversation call
(pam_chatty and pam_matrix send one per call), and real ones (pam_krb5, pam_sss) do.
*/
import {execFileSync, spawn, type ChildProcessByStdio} from 'node:child_process';
import {mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type {Readable, Writable} from 'node:stream';
import {fileURLToPath} from 'node:url';
import {afterAll, beforeAll, describe, expect, it} from 'vitest';
import {createPamSandbox, matrixStack, type PamSandbox} from '../../src/sandbox.js';
import {decodeResponse, encodeRequest, ResponseReader, type WorkerResult} from '../../src/worker-protocol.js';

/** `AUTHSERVICE_TEST_WORKER` runs these tests on another build (a debug one, a mutant); not under PAM_AUTHSERVICE_, which the daemon reads as options. */
const workerPath = process.env['AUTHSERVICE_TEST_WORKER'] ?? fileURLToPath(new URL('../../build/pam-authservice-worker', import.meta.url));

// From <security/_pam_types.h>.
const pamSystemError = 4;
const pamAuthError = 7;
const pamConvError = 19;
const pamAbort = 26;

// pam_matrix reads only the first passdb line of a user, for its password and its one service: a
// user on two services fails on the second, so every service here has users of its own.
const alice = {user: 'alice', password: 'alice-Right-Pa55', service: 'matrix'};
const long = {user: 'lena', password: 'Lx'.repeat(63) + 'L', service: 'matrix'};
const dana = {user: 'dana', password: 'dana-Right-Pa55', service: 'denied'};
const fay = {user: 'fay', password: 'fay-Right-Pa55', service: 'faildelay'};
const fred = {user: 'fred', password: 'fred-Right-Pa55', service: 'faildelay-denied'};
const vera = {user: 'vera', password: 'vera-Right-Pa55', service: 'verbose'};
// With `echo`, pam_matrix asks with an echo-on prompt, which the worker answers with the user name.
const eve = {user: 'eve', password: 'eve', service: 'echo'};
const ed = {user: 'ed', password: 'ed-Right-Pa55', service: 'echo'};
const rita = {user: 'rita', password: 'rita-Right-Pa55', service: 'ruser'};
const mia = {user: 'mia', password: 'mia-Right-Pa55', service: 'talk'};
const passwords = [alice, long, dana, fay, fred, vera, eve, ed, rita, mia].map(({password}) => password).filter(password => password.length > 3);

/** The module behind the `talk*` services; `mode=` picks what it says, `expect=` the password. */
const talkModule = String.raw`
#include <security/pam_modules.h>
#include <stdlib.h>
#include <string.h>

static int converse(pam_handle_t *pamh, int count, const struct pam_message **messages, struct pam_response **replies)
{
	const struct pam_conv *conv;
	int rc = pam_get_item(pamh, PAM_CONV, (const void **)&conv);
	*replies = NULL;
	return rc != PAM_SUCCESS ? rc : conv->conv(count, messages, replies, conv->appdata_ptr);
}

static void drop(struct pam_response *replies, int count)
{
	for (int i = 0; replies && i < count; i++)
		free(replies[i].resp);
	free(replies);
}

static int same(const char *a, const char *b) { return a && b && strcmp(a, b) == 0; }

int pam_sm_authenticate(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	const char *mode = "four", *expect = "", *user = NULL;
	(void)flags;
	for (int i = 0; i < argc; i++) {
		if (strncmp(argv[i], "mode=", 5) == 0) mode = argv[i] + 5;
		if (strncmp(argv[i], "expect=", 7) == 0) expect = argv[i] + 7;
	}
	if (pam_get_user(pamh, &user, NULL) != PAM_SUCCESS)
		return PAM_SYSTEM_ERR;

	struct pam_response *r;
	int rc;
	if (strcmp(mode, "four") == 0) {
		/* Everything in one call, as pam_krb5 does with its banners and prompts. */
		struct pam_message m[4] = {{PAM_TEXT_INFO, "talk: info"}, {PAM_ERROR_MSG, "talk: error"},
			{PAM_PROMPT_ECHO_ON, "Login: "}, {PAM_PROMPT_ECHO_OFF, "Password: "}};
		const struct pam_message *p[4] = {&m[0], &m[1], &m[2], &m[3]};
		if ((rc = converse(pamh, 4, p, &r)) != PAM_SUCCESS)
			return rc;
		int ok = r && !r[0].resp && !r[1].resp && same(r[2].resp, user) && same(r[3].resp, expect);
		drop(r, 4);
		return ok ? PAM_SUCCESS : PAM_AUTH_ERR;
	}
	if (strcmp(mode, "unknown") == 0) {
		struct pam_message m[3] = {{PAM_TEXT_INFO, "before"}, {PAM_PROMPT_ECHO_OFF, "Password: "}, {99, "what style?"}};
		const struct pam_message *p[3] = {&m[0], &m[1], &m[2]};
		rc = converse(pamh, 3, p, &r);
		if (rc == PAM_SUCCESS)
			drop(r, 3);
		return rc == PAM_SUCCESS ? PAM_SYSTEM_ERR : rc;
	}
	if (strcmp(mode, "toomany") == 0) {
		struct pam_message m = {PAM_TEXT_INFO, "one too many"};
		const struct pam_message *p[PAM_MAX_NUM_MSG + 1];
		for (int i = 0; i <= PAM_MAX_NUM_MSG; i++)
			p[i] = &m;
		rc = converse(pamh, PAM_MAX_NUM_MSG + 1, p, &r);
		if (rc == PAM_SUCCESS)
			drop(r, PAM_MAX_NUM_MSG + 1);
		return rc == PAM_SUCCESS ? PAM_SYSTEM_ERR : rc;
	}
	if (strcmp(mode, "flood") == 0) {
		/* 40 long error messages, one call each, then the prompt: more than the worker keeps. */
		char text[2001];
		for (int i = 0; i < 40; i++) {
			memset(text, 'a' + i % 26, 2000);
			text[2000] = '\0';
			struct pam_message m = {PAM_ERROR_MSG, text};
			const struct pam_message *p = &m;
			if ((rc = converse(pamh, 1, &p, &r)) != PAM_SUCCESS)
				return rc;
			drop(r, 1);
		}
		struct pam_message m = {PAM_PROMPT_ECHO_OFF, "Password: "};
		const struct pam_message *p = &m;
		if ((rc = converse(pamh, 1, &p, &r)) != PAM_SUCCESS)
			return rc;
		int ok = r && same(r[0].resp, expect);
		drop(r, 1);
		return ok ? PAM_SUCCESS : PAM_AUTH_ERR;
	}
	return PAM_SYSTEM_ERR;
}

int pam_sm_setcred(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	(void)pamh; (void)flags; (void)argc; (void)argv;
	return PAM_SUCCESS;
}
`;

let directory: string;
let sandbox: PamSandbox;
/** Everything every worker wrote to stderr: checked for passwords at the end. */
const stderrTexts: string[] = [];

beforeAll(() => {
	directory = mkdtempSync(path.join(os.tmpdir(), 'pam-authservice-worker-test-'));
	const talk = path.join(directory, 'pam_talk.so');
	writeFileSync(path.join(directory, 'pam_talk.c'), talkModule);
	execFileSync(process.env.CC ?? 'cc', ['-shared', '-fPIC', '-Wall', '-Werror', '-o', talk, path.join(directory, 'pam_talk.c'), '-lpam']);
	const talkStack = (options: string): string => `auth required ${talk} ${options}\naccount required \${lib}/pam_permit.so\n`;

	sandbox = createPamSandbox({
		directory,
		users: [alice, long, dana, fay, fred, vera, eve, ed, rita, mia],
		services: {
			matrix: matrixStack,
			denied: 'auth required ${matrix}\naccount required ${lib}/pam_deny.so\n',
			faildelay: 'auth optional ${lib}/pam_faildelay.so delay=1000000\nauth required ${matrix}\naccount required ${matrix}\n',
			'faildelay-denied': 'auth optional ${lib}/pam_faildelay.so delay=1000000\nauth required ${matrix}\naccount required ${lib}/pam_deny.so\n',
			verbose: 'auth required ${matrix} verbose\naccount required ${matrix}\n',
			echo: 'auth required ${matrix} echo\naccount required ${matrix}\n',
			// pam_exec hands PAM_RUSER to its command's environment; libpam's `[…]` quotes an argument.
			ruser: 'auth required ${lib}/pam_exec.so quiet /bin/sh -c [test "$PAM_RUSER" = alice-caller]\nauth required ${matrix}\naccount required ${matrix}\n',
			talk: talkStack(`mode=four expect=${mia.password}`),
			'talk-unknown': talkStack('mode=unknown'),
			'talk-toomany': talkStack('mode=toomany'),
			'talk-flood': talkStack(`mode=flood expect=${mia.password}`),
		},
	});
});

afterAll(() => {
	rmSync(directory, {recursive: true, force: true});
});

type Worker = {
	readonly process: ChildProcessByStdio<Writable, Readable, Readable>;
	readonly results: WorkerResult[];
	/** The next answer not yet taken. */
	next(): Promise<WorkerResult>;
	/** The exit code, once the worker is gone. */
	readonly exited: Promise<number | null>;
	stderr(): string;
};

function startWorker(environment: Readonly<Record<string, string>> = sandbox.environment): Worker {
	const child = spawn(workerPath, [], {env: {...process.env, ...environment}, stdio: ['pipe', 'pipe', 'pipe']});
	const reader = new ResponseReader();
	const results: WorkerResult[] = [];
	const waiting: Array<(result: WorkerResult) => void> = [];
	let taken = 0;
	let stderr = '';
	child.stdout.on('data', (chunk: Buffer) => {
		for (const payload of reader.push(chunk)) {
			results.push(decodeResponse(payload));
			if (waiting.length > 0) {
				waiting.shift()!(results[taken++]!);
			}
		}
	});
	child.stderr.setEncoding('latin1').on('data', (text: string) => {
		stderr += text;
	});
	const exited = new Promise<number | null>(resolve => {
		child.on('close', code => {
			stderrTexts.push(stderr);
			resolve(code);
		});
	});
	return {
		process: child,
		results,
		exited,
		stderr: () => stderr,
		async next() {
			if (taken < results.length) {
				return results[taken++]!;
			}

			return new Promise((resolve, reject) => {
				waiting.push(resolve);
				void exited.then(code => {
					reject(new Error(`The worker exited (${code}) without answering`));
				});
			});
		},
	};
}

function frame(service: string, user: string, password: string | Buffer, ruser = ''): Buffer {
	return encodeRequest({service: Buffer.from(service), user: Buffer.from(user), password: Buffer.from(password), ruser: Buffer.from(ruser)});
}

/** One request to a fresh worker, which must then exit 0 at EOF. */
async function check(service: string, user: string, password: string | Buffer, ruser = ''): Promise<WorkerResult> {
	const worker = startWorker();
	const answer = worker.next();
	worker.process.stdin.end(frame(service, user, password, ruser));
	const result = await answer;
	expect(await worker.exited).toBe(0);
	expect(worker.results).toHaveLength(1);
	return result;
}

describe('a check', () => {
	it('passes with the right password', async () => {
		expect(await check('matrix', alice.user, alice.password)).toEqual({pamCode: 0, step: 'none', delayUs: 0, text: 'Success', messages: [{style: 'prompt_echo_off', text: 'Password: '}]});
	});

	it('fails with a wrong password at pam_authenticate, with the PAM text', async () => {
		const result = await check('matrix', alice.user, 'alice-Wrong-Pa55');
		expect(result).toMatchObject({pamCode: pamAuthError, step: 'pam_authenticate', text: 'Authentication failure'});
	});

	it('takes the password byte for byte: 127 right bytes pass, 128 or 512 bytes fail', async () => {
		expect(long.password).toMatch(/^[A-Za-z]{127}$/);
		expect((await check('matrix', long.user, long.password)).step).toBe('none');
		expect((await check('matrix', long.user, long.password + 'x')).step).toBe('pam_authenticate');
		expect((await check('matrix', long.user, long.password + 'x'.repeat(512 - 127))).step).toBe('pam_authenticate');
		expect((await check('matrix', long.user, long.password.slice(0, 126))).step).toBe('pam_authenticate');
	});

	it('refuses a field with a NUL byte instead of cutting it there, without calling PAM', async () => {
		const refused = {pamCode: pamAuthError, step: 'request', text: 'field contains a NUL byte', messages: [], delayUs: 0};
		expect(await check('matrix', alice.user, Buffer.from(`${alice.password}\0junk`))).toEqual(refused);
		expect(await check('matrix', `${alice.user}\0x`, alice.password)).toEqual(refused);
		expect(await check('matrix\0x', alice.user, alice.password)).toEqual(refused);
		expect(await check('ruser', rita.user, rita.password, 'alice-caller\0x')).toEqual(refused);
	});

	it('fails at pam_acct_mgmt when the account section denies a right password', async () => {
		// pam_deny's account function answers PAM_AUTH_ERR, not PAM_PERM_DENIED.
		expect(await check('denied', dana.user, dana.password)).toMatchObject({step: 'pam_acct_mgmt', pamCode: pamAuthError, text: 'Authentication failure'});
	});

	it('reports the failure delay a module asks for, without sleeping it', async () => {
		const started = performance.now();
		const failed = await check('faildelay', fay.user, 'fay-Wrong-Pa55');
		expect(performance.now() - started).toBeLessThan(500);
		expect(failed.step).toBe('pam_authenticate');
		// libpam randomises the 1 s it is asked for, seeded by the clock (_pam_compute_delay).
		expect(failed.delayUs).toBeGreaterThanOrEqual(500_000);
		expect(failed.delayUs).toBeLessThanOrEqual(1_500_000);
		// libpam calls back after a success too, with a delay that is not to be waited: 0.
		expect(await check('faildelay', fay.user, fay.password)).toMatchObject({step: 'none', delayUs: 0});
		// libpam waits only after a failed pam_authenticate, not after a failed pam_acct_mgmt.
		expect(await check('faildelay-denied', fred.user, fred.password)).toMatchObject({step: 'pam_acct_mgmt', delayUs: 0});
		// No pam_faildelay in the stack: no delay.
		expect((await check('matrix', alice.user, 'alice-Wrong-Pa55')).delayUs).toBe(0);
	});

	it('fails for a service without a PAM file, through the sandbox\'s `other` (pam_deny)', async () => {
		expect(await check('no-such-service', alice.user, alice.password)).toMatchObject({step: 'pam_authenticate', pamCode: pamAuthError});
	});

	it('fails at pam_start, with a fixed text, when there is no `other` either', async () => {
		const bare = createPamSandbox({directory: path.join(directory, 'bare'), users: [alice], services: {matrix: matrixStack}});
		rmSync(path.join(bare.serviceDirectory, 'other'));
		const worker = startWorker(bare.environment);
		const first = worker.next();
		const second = worker.next();
		worker.process.stdin.end(Buffer.concat([frame('no-such-service', alice.user, alice.password), frame('matrix', alice.user, alice.password)]));
		expect(await first).toEqual({pamCode: pamAbort, step: 'pam_start', text: 'pam_start failed', delayUs: 0, messages: []});
		// The worker goes on after a failed pam_start.
		expect((await second).step).toBe('none');
		expect(await worker.exited).toBe(0);
	});

	it('sets PAM_RUSER to the ruser field, and leaves it unset when the field is empty', async () => {
		expect((await check('ruser', rita.user, rita.password, 'alice-caller')).step).toBe('none');
		expect(await check('ruser', rita.user, rita.password, 'mallory')).toMatchObject({step: 'pam_authenticate', pamCode: pamSystemError});
		expect((await check('ruser', rita.user, rita.password)).step).toBe('pam_authenticate');
	});
});

describe('the conversation', () => {
	it('answers several messages in one call: info and error kept, echo-on with the user, echo-off with the password', async () => {
		const talked = [
			{style: 'info', text: 'talk: info'},
			{style: 'error', text: 'talk: error'},
			{style: 'prompt_echo_on', text: 'Login: '},
			{style: 'prompt_echo_off', text: 'Password: '},
		];
		expect(await check('talk', mia.user, mia.password)).toEqual({pamCode: 0, step: 'none', delayUs: 0, text: 'Success', messages: talked});
		expect(await check('talk', mia.user, 'mia-Wrong-Pa55')).toMatchObject({step: 'pam_authenticate', pamCode: pamAuthError, messages: talked});
	});

	it('answers pam_matrix\'s echo-on prompt with the user name, never the password', async () => {
		const passed = await check('echo', eve.user, 'anything-at-all');
		expect(passed.step).toBe('none');
		expect(passed.messages).toEqual([{style: 'prompt_echo_on', text: 'Password: '}]);
		// ed's right password is not what the prompt gets.
		expect((await check('echo', ed.user, ed.password)).step).toBe('pam_authenticate');
	});

	it('keeps pam_matrix\'s info and error messages, sent with no reply pointer', async () => {
		expect((await check('verbose', vera.user, vera.password)).messages).toEqual([{style: 'prompt_echo_off', text: 'Password: '}, {style: 'info', text: 'Authentication succeeded'}]);
		const failed = await check('verbose', vera.user, 'vera-Wrong-Pa55');
		expect(failed.step).toBe('pam_authenticate');
		expect(failed.messages).toEqual([{style: 'prompt_echo_off', text: 'Password: '}, {style: 'error', text: 'Authentication failed'}]);
	});

	it('fails the conversation on a message style it does not know', async () => {
		expect(await check('talk-unknown', mia.user, mia.password)).toEqual({step: 'pam_authenticate', pamCode: pamConvError, text: 'Conversation error', delayUs: 0, messages: [
			{style: 'info', text: 'before'},
			{style: 'prompt_echo_off', text: 'Password: '},
			{style: 'unknown', text: 'what style?'},
		]});
	});

	it('fails the conversation on more than PAM_MAX_NUM_MSG messages in one call', async () => {
		expect(await check('talk-toomany', mia.user, mia.password)).toMatchObject({step: 'pam_authenticate', pamCode: pamConvError, messages: []});
	});

	it('keeps at most 32 messages of at most 1024 bytes, and still checks the password', async () => {
		const result = await check('talk-flood', mia.user, mia.password);
		expect(result.step).toBe('none');
		expect(result.messages).toHaveLength(32);
		expect(result.messages.map(({text}) => text)).toEqual(Array.from({length: 32}, (_, index) => String.fromCodePoint(97 + (index % 26)).repeat(1024)));
		expect((await check('talk-flood', mia.user, 'mia-Wrong-Pa55')).step).toBe('pam_authenticate');
	});
});

describe('the worker process', () => {
	it('answers many pipelined requests in order', async () => {
		const requests: Array<[Buffer, string]> = [];
		for (let index = 0; index < 30; index++) {
			const [request, step] = [
				[frame('matrix', alice.user, alice.password), 'none'],
				[frame('matrix', alice.user, `wrong-${index}`), 'pam_authenticate'],
				[frame('denied', dana.user, dana.password), 'pam_acct_mgmt'],
				[frame('matrix', alice.user, Buffer.from('a\0b')), 'request'],
				[frame('talk', mia.user, mia.password), 'none'],
			][(index * 7) % 5] as [Buffer, string];
			requests.push([request, step]);
		}

		const worker = startWorker();
		worker.process.stdin.end(Buffer.concat(requests.map(([request]) => request)));
		expect(await worker.exited).toBe(0);
		expect(worker.results.map(({step}) => step)).toEqual(requests.map(([, step]) => step));
	});

	it('exits 0 at EOF on stdin, having written nothing', async () => {
		const worker = startWorker();
		worker.process.stdin.end();
		expect(await worker.exited).toBe(0);
		expect(worker.results).toEqual([]);
		expect(worker.stderr()).toBe('');
	});

	const payloadOf = (...fields: Buffer[]): Buffer => Buffer.concat(fields.flatMap(field => [u32(field.length), field]));
	const framed = (payload: Buffer): Buffer => Buffer.concat([u32(payload.length), payload]);
	const withPassword = frame('matrix', alice.user, alice.password);
	it.each([
		['a frame over 65 536 bytes', u32(65_537)],
		['the largest 32-bit length', Buffer.from([0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3])],
		['a frame cut short (the password in it)', withPassword.subarray(0, withPassword.length - 3)],
		['a frame header cut short', Buffer.from([9, 0])],
		['an empty payload', u32(0)],
		['a field that overruns the payload', framed(Buffer.concat([u32(1000), Buffer.from('matrix')]))],
		['three fields', framed(payloadOf(Buffer.from('matrix'), Buffer.from('alice'), Buffer.from(alice.password)))],
		['five fields', framed(payloadOf(Buffer.from('matrix'), Buffer.from('alice'), Buffer.from(alice.password), Buffer.alloc(0), Buffer.from('x')))],
		['stray bytes after the fourth field', framed(Buffer.concat([payloadOf(Buffer.from('matrix'), Buffer.from('alice'), Buffer.from(alice.password), Buffer.alloc(0)), Buffer.from([0])]))],
	])('exits 3 on %s, with one line on stderr and no answer', async (_name, bytes) => {
		const worker = startWorker();
		// A good request first: the error ends a worker that has already answered.
		worker.process.stdin.end(Buffer.concat([frame('matrix', alice.user, alice.password), bytes]));
		expect(await worker.exited).toBe(3);
		expect(worker.results.map(({step}) => step)).toEqual(['none']);
		// pam_wrapper's own log lines go to stderr too; the worker's are its own.
		expect(worker.stderr().split('\n').filter(line => line.startsWith('pam-authservice-worker:'))).toEqual([expect.stringMatching(/^pam-authservice-worker: protocol error: /)]);
		expect(worker.stderr()).not.toContain(alice.password);
	});

	it('exits 4 when its answer cannot be written', async () => {
		const worker = startWorker();
		worker.process.stdout.destroy();
		worker.process.stdin.end(frame('matrix', alice.user, alice.password));
		expect(await worker.exited).toBe(4);
		expect(worker.stderr()).toMatch(/cannot write the answer/);
	});

	it('holds no password in its command line, and may not dump core', async () => {
		const worker = startWorker();
		const answer = worker.next();
		worker.process.stdin.write(frame('matrix', alice.user, alice.password));
		expect((await answer).step).toBe('none');
		const cmdline = readFileSync(`/proc/${worker.process.pid}/cmdline`, 'latin1');
		expect(cmdline).toBe(`${workerPath}\0`);
		expect(readFileSync(`/proc/${worker.process.pid}/limits`, 'latin1')).toMatch(/^Max core file size\s+0\s+0\s/m);
		worker.process.stdin.end();
		expect(await worker.exited).toBe(0);
	});

	it('closes every descriptor it inherited beyond stdin, stdout and stderr', async () => {
		// As a daemon started by systemd passes its listening socket, without close-on-exec.
		const child = spawn(workerPath, [], {env: {...process.env, ...sandbox.environment}, stdio: ['pipe', 'pipe', 'ignore', 'pipe', 'pipe']});
		const reader = new ResponseReader();
		const answered = new Promise<WorkerResult>(resolve => {
			child.stdout!.on('data', (chunk: Buffer) => {
				const [payload] = reader.push(chunk);
				if (payload) {
					resolve(decodeResponse(payload));
				}
			});
		});
		child.stdin!.write(frame('matrix', alice.user, alice.password));
		expect((await answered).step).toBe('none');
		expect(readdirSync(`/proc/${child.pid}/fd`).map(Number).sort((a, b) => a - b)).toEqual([0, 1, 2]);
		const exited = new Promise(resolve => child.on('close', resolve));
		child.stdin!.end();
		expect(await exited).toBe(0);
	});

	it('never wrote a password to stderr', () => {
		expect(stderrTexts.length).toBeGreaterThan(20);
		for (const text of stderrTexts) {
			for (const password of passwords) {
				expect(text).not.toContain(password);
			}
		}
	});
});

function u32(value: number): Buffer {
	const buffer = Buffer.alloc(4);
	buffer.writeUInt32LE(value);
	return buffer;
}
