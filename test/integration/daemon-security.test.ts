/**
Who may ask, how often: caller identity, policy, throttling and per-uid limits, on the built daemon.
*/
import {execFile} from 'node:child_process';
import {readFileSync} from 'node:fs';
import path from 'node:path';
import {setTimeout as delay} from 'node:timers/promises';
import {promisify} from 'node:util';
import {afterEach, describe, expect, it} from 'vitest';
import {matrixStack} from '../../src/sandbox.js';
import {alice, carol, services, users, wrongPassword} from '../fixtures/users.js';
import {connect, Daemon, isRoot, rememberPassword, repositoryRoot} from '../helpers/daemon.js';

const checkRuser = path.join(repositoryRoot, 'test/fixtures/check-ruser.sh');

const running: Daemon[] = [];

async function start(args: string[], options: {services?: Record<string, string>; users?: typeof users} = {}): Promise<Daemon> {
	const daemon = await Daemon.start({users: options.users ?? users, services: options.services ?? services, args});
	running.push(daemon);
	return daemon;
}

afterEach(async () => {
	await Promise.all(running.splice(0).map(async daemon => daemon.stop()));
});

/** Generous throttle settings, so that only the rule under test is in force. */
const noThrottle = ['--free-failures', '1000', '--failure-budget-burst', '1000000', '--failure-budget-per-second', '1000000'];

const timed = async <T>(promise: Promise<T>): Promise<{value: T; ms: number}> => {
	const started = performance.now();
	const value = await promise;
	return {value, ms: performance.now() - started};
};

describe('caller identity', () => {
	it('logs each request with the caller\'s pid, uid, user name and executable', async () => {
		const daemon = await start(noThrottle);
		expect(await daemon.ask(alice.user, alice.password)).toBe('ok');
		const log = await daemon.waitForLog(entry => entry.msg === 'request' && entry['user'] === 'alice');
		expect(log['caller']).toEqual({
			pid: process.pid,
			uid: process.getuid?.(),
			user: (await promisify(execFile)('id', ['-un'])).stdout.trim(),
			exe: readFileSync('/proc/self/cmdline', 'latin1').split('\0')[0] === process.execPath ? process.execPath : expect.any(String),
		});
	});

	it('gives PAM the caller\'s user name as PAM_RUSER', async () => {
		const me = (await promisify(execFile)('id', ['-un'])).stdout.trim();
		const daemon = await start(noThrottle, {services: {
			x2gobroker: matrixStack,
			ruser: `auth required \${lib}/pam_exec.so quiet ${checkRuser} ${me}\nauth required \${matrix}\naccount required \${lib}/pam_permit.so\n`,
			notruser: `auth required \${lib}/pam_exec.so quiet ${checkRuser} someone-else\nauth required \${matrix}\naccount required \${lib}/pam_permit.so\n`,
		}, users: [{...alice, service: 'ruser'}]});
		expect(await daemon.ask(alice.user, alice.password, 'ruser')).toBe('ok');
		expect(await daemon.ask(alice.user, alice.password, 'notruser')).toBe('fail');
	});
});

describe('caller policy', () => {
	it('refuses a caller no rule names, without calling PAM, and logs the rule', async () => {
		const daemon = await start([...noThrottle, '--callers', 'x2gobroker=user:65000,group:65001']);
		expect(await daemon.ask(alice.user, alice.password)).toBe('fail');
		const log = await daemon.waitForLog(entry => entry.msg === 'request' && String(entry['reason']).startsWith('policy'));
		expect(log['reason']).toBe('policy: callers.x2gobroker = user:65000,group:65001');
		expect(log['workerPid']).toBeUndefined();
	});

	it('serves a caller a rule names, by uid or by group', async () => {
		const byUser = await start([...noThrottle, '--callers', `x2gobroker=user:${process.getuid?.()}`]);
		expect(await byUser.ask(alice.user, alice.password)).toBe('ok');
		const byGroup = await start([...noThrottle, '--callers', `x2gobroker=group:${process.getgid?.()}`]);
		expect(await byGroup.ask(alice.user, alice.password)).toBe('ok');
	});

	it.skipIf(!isRoot)('refuses a caller uid the policy leaves out, though the socket lets it in (as root)', async () => {
		const daemon = await start([...noThrottle, '--permissions', '0o666', '--callers', 'x2gobroker=user:root']);
		for (const directory of [daemon.directory, path.dirname(daemon.socketPath)]) {
			await promisify(execFile)('chmod', ['o+x', directory]);
		}

		rememberPassword(alice.password);
		const script = 'const s=require("net").connect(process.argv[1]);s.on("data",d=>{process.stdout.write(d);s.destroy();});s.write("alice\\r"+process.env.PW+"\\rx2gobroker\\n");';
		const {stdout} = await promisify(execFile)('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', process.execPath, '-e', script, daemon.socketPath], {env: {PW: alice.password}});
		expect(stdout).toBe('fail\n');
		const log = await daemon.waitForLog(entry => String(entry['reason']).startsWith('policy'));
		expect(log['caller']).toMatchObject({uid: 65_534, user: 'nobody'});
		expect(await daemon.ask(alice.user, alice.password)).toBe('ok');
	});
});

describe('throttling per (service, user)', () => {
	const backoff = ['--free-failures', '2', '--backoff-base-ms', '300', '--backoff-max-ms', '1200', '--failure-budget-burst', '1000000'];

	it('holds answers back longer with each failure after the free ones, and a success resets', async () => {
		const daemon = await start(backoff);
		const holds: number[] = [];
		for (let index = 0; index < 5; index++) {
			// eslint-disable-next-line no-await-in-loop
			const {value, ms} = await timed(daemon.ask(alice.user, `${wrongPassword}-${index}`));
			expect(value).toBe('fail');
			holds.push(ms);
		}

		// Free, free, 300, 600, 1200 ms.
		expect(holds[0]).toBeLessThan(250);
		expect(holds[1]).toBeLessThan(250);
		expect(holds[2]).toBeGreaterThanOrEqual(290);
		expect(holds[3]).toBeGreaterThanOrEqual(590);
		expect(holds[4]).toBeGreaterThanOrEqual(1190);
		// Waits out the last penalty, then succeeds; the next failure is free again.
		expect(await daemon.ask(alice.user, alice.password)).toBe('ok');
		expect((await timed(daemon.ask(alice.user, `${wrongPassword}-again`))).ms).toBeLessThan(250);
	});

	it('does not escalate when the same wrong password is repeated', async () => {
		const daemon = await start(backoff);
		const holds: number[] = [];
		for (let index = 0; index < 5; index++) {
			// eslint-disable-next-line no-await-in-loop
			holds.push((await timed(daemon.ask(alice.user, `${wrongPassword}-same`))).ms);
		}

		expect(Math.max(...holds)).toBeLessThan(250);
	});

	it('makes ten parallel wrong guesses for one user take ten penalties, not one', async () => {
		const daemon = await start(['--free-failures', '0', '--backoff-base-ms', '100', '--backoff-max-ms', '100', '--max-waiting-per-key', '10', '--failure-budget-burst', '1000000']);
		const {value, ms} = await timed(Promise.all(Array.from({length: 10}, async (_, index) => daemon.ask(alice.user, `${wrongPassword}-parallel-${index}`))));
		expect(value).toEqual(Array.from({length: 10}, () => 'fail'));
		expect(ms).toBeGreaterThanOrEqual(950);
	});

	it('answers fail at once beyond maxWaitingPerKey', async () => {
		const daemon = await start(['--free-failures', '0', '--backoff-base-ms', '1000', '--max-waiting-per-key', '1', '--failure-budget-burst', '1000000']);
		await daemon.ask(alice.user, `${wrongPassword}-first`);
		const answers = await Promise.all(Array.from({length: 4}, async (_, index) => timed(daemon.ask(alice.user, `${wrongPassword}-more-${index}`))));
		const quick = answers.filter(({ms}) => ms < 500);
		expect(quick.length).toBeGreaterThanOrEqual(2);
		await daemon.waitForLog(entry => String(entry['reason']).startsWith('throttle: more than 1 requests waiting'));
	});

	it('leaves other users alone while one is held back', async () => {
		const daemon = await start(['--free-failures', '0', '--backoff-base-ms', '5000', '--backoff-max-ms', '5000', '--failure-budget-burst', '1000000']);
		await daemon.ask(alice.user, `${wrongPassword}-x`);
		const {value, ms} = await timed(daemon.ask(carol.user, carol.password));
		expect(value).toBe('ok');
		expect(ms).toBeLessThan(500);
	});
});

describe('the failure budget per caller', () => {
	it('does not punish a broker: 100 failures for 100 users, then another user\'s login answered at once', async () => {
		const daemon = await start([]);
		const many = Array.from({length: 100}, (_, index) => `user${index}\r${wrongPassword}\rx2gobroker\n`).join('');
		rememberPassword(wrongPassword);
		expect(await daemon.send(many)).toEqual(Array.from({length: 100}, () => 'fail'));
		const {value, ms} = await timed(daemon.ask(alice.user, alice.password));
		expect(value).toBe('ok');
		expect(ms).toBeLessThan(500);
	});

	it('slows a caller that sprays one password over many users beyond its budget', async () => {
		const daemon = await start(['--failure-budget-burst', '10', '--failure-budget-per-second', '10']);
		rememberPassword(wrongPassword);
		const spray = Array.from({length: 30}, (_, index) => `spray${index}\r${wrongPassword}\rx2gobroker\n`).join('');
		const {value, ms} = await timed(daemon.send(spray));
		expect(value).toEqual(Array.from({length: 30}, () => 'fail'));
		// 10 free, then 20 at 10 a second.
		expect(ms).toBeGreaterThanOrEqual(1700);
	});

	it('keeps memory flat after 200 000 failures for random users', async () => {
		const daemon = await start(['--failure-budget-burst', '100000000', '--failure-budget-per-second', '100000000', '--max-throttle-keys', '1000', '--max-requests-per-connection', '1024', '--max-workers', '4'], {services: {x2gobroker: 'auth required ${lib}/pam_deny.so\naccount required ${lib}/pam_deny.so\n'}});
		const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${daemon.process.pid}/status`, 'utf8'))?.[1]) * 1024;
		const batch = async (from: number, count: number) => {
			const requests = Array.from({length: count}, (_, index) => `r${from + index}-${Math.random().toString(36).slice(2)}\rwrong-Pa55-flood\rx2gobroker\n`).join('');
			const socket = await connect(daemon.socketPath);
			let answered = 0;
			await new Promise<void>((resolve, reject) => {
				socket.on('data', chunk => {
					answered += chunk.toString().split('\n').length - 1;
					if (answered >= count) {
						resolve();
					}
				});
				socket.on('error', reject);
				socket.write(requests);
			});
			socket.destroy();
		};

		rememberPassword('wrong-Pa55-flood');
		await batch(0, 20_000);
		const before = rss();
		for (let from = 20_000; from < 200_000; from += 20_000) {
			// eslint-disable-next-line no-await-in-loop
			await batch(from, 20_000);
		}

		const after = rss();
		expect(after - before).toBeLessThan(40 * 1024 * 1024);
	}, 240_000);
});

describe('maxConnectionsPerUid', () => {
	it('closes a caller\'s connection beyond its limit', async () => {
		const daemon = await start(['--max-connections-per-uid', '3']);
		const open = await Promise.all(Array.from({length: 3}, async () => connect(daemon.socketPath)));
		const extra = await connect(daemon.socketPath);
		const closed = await new Promise(resolve => {
			extra.on('close', () => {
				resolve(true);
			});
			extra.on('error', () => {});
			setTimeout(() => {
				resolve(false);
			}, 2000);
		});
		expect(closed).toBe(true);
		await daemon.waitForLog(entry => entry.msg.includes('connection limit of this caller'));
		open[0]!.destroy();
		await delay(100);
		expect(await daemon.ask(alice.user, alice.password)).toBe('ok');
		for (const socket of open) {
			socket.destroy();
		}
	});
});
