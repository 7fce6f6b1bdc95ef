/**
The worker pool under the daemon: slow checks, dead and hung workers, replacement, shutdown.
*/
import {execFileSync, spawnSync} from 'node:child_process';
import {existsSync, readFileSync} from 'node:fs';
import {availableParallelism} from 'node:os';
import {setTimeout as delay} from 'node:timers/promises';
import {afterEach, describe, expect, it} from 'vitest';
import {alice, crowd, sam, services, slowUsers, users, wrongPassword} from '../fixtures/users.js';
import {connect, Daemon, readLines, requestLine} from '../helpers/daemon.js';

const running: Daemon[] = [];

async function start(args: string[] = []): Promise<Daemon> {
	const daemon = await Daemon.start({users, services, args});
	running.push(daemon);
	return daemon;
}

afterEach(async () => {
	await Promise.all(running.splice(0).map(async daemon => daemon.stop()));
});

/** The daemon's worker processes, found by their parent. */
function workerPids(daemon: Daemon): number[] {
	// ps exits 1 when it lists nothing.
	const output = spawnSync('ps', ['-o', 'pid=', '--ppid', String(daemon.process.pid)], {encoding: 'utf8'}).stdout;
	return output.split('\n').map(text => Number(text.trim())).filter(pid => pid > 0);
}

/** A worker that is running a check right now: it has a `sleep` from pam_exec as its child. */
function busyWorker(daemon: Daemon): number | undefined {
	return workerPids(daemon).find(pid => {
		const children = spawnSync('ps', ['-o', 'comm=', '--ppid', String(pid)], {encoding: 'utf8'}).stdout;
		return children.includes('sleep');
	});
}

describe('no head-of-line blocking', () => {
	it('answers a good login at once while 20 failing checks wait out a 1 s failure delay', async () => {
		const daemon = await start();
		// Twenty users: the throttle would line up twenty requests for one user one behind the other.
		const failing = Array.from({length: 20}, async (_, index) => {
			const started = Date.now();
			const answer = await daemon.ask(`fay${index}`, wrongPassword, 'faildelay');
			return {answer, ms: Date.now() - started};
		});
		await delay(100);
		const started = Date.now();
		expect(await daemon.ask(alice.user, alice.password)).toBe('ok');
		expect(Date.now() - started).toBeLessThan(500);

		const results = await Promise.all(failing);
		expect(results.map(result => result.answer)).toEqual(Array.from({length: 20}, () => 'fail'));
		// The failure delay is kept (on a timer in the daemon, not by a sleeping worker).
		for (const {ms} of results) {
			expect(ms).toBeGreaterThanOrEqual(500);
		}

		const log = await daemon.waitForLog(entry => entry.msg === 'request' && entry['user'] === 'fay0');
		expect(log['delayMs']).toBeGreaterThanOrEqual(500);
	});

	it('answers other callers while slow checks run, growing the pool by a worker for each slow check', async () => {
		const daemon = await start(['--min-workers', '1', '--eager-workers', '1', '--slow-check-ms', '50']);
		const slow = slowUsers.slice(0, 6).map(async ({user, password}) => daemon.ask(user, password, 'slow'));
		await delay(500);
		const started = Date.now();
		expect(await daemon.ask(alice.user, alice.password)).toBe('ok');
		expect(Date.now() - started).toBeLessThan(500);
		// Six slow checks, each with its worker, and one worker more for alice's.
		expect(workerPids(daemon)).toHaveLength(7);
		expect(await Promise.all(slow)).toEqual(Array.from({length: 6}, () => 'ok'));
	});
});

describe('pool growth', () => {
	it('keeps a stack that answers fast at eagerWorkers, however many checks wait', async () => {
		const daemon = await start(['--min-workers', '1', '--eager-workers', '2', '--slow-check-ms', '5000']);
		const requests = Array.from({length: 100}, (_, index) => crowd[index % crowd.length]!);
		expect(await daemon.send(requests.map(({user, password}) => requestLine(user, password)).join(''))).toEqual(requests.map(() => 'ok'));
		await daemon.settled();
		expect(new Set(daemon.requestLogs.map(entry => entry['workerPid'])).size).toBe(2);
		expect(workerPids(daemon)).toHaveLength(2);
	});

	it('takes two workers a CPU for eagerWorkers 0, its default', async () => {
		const daemon = await start(['--min-workers', '1', '--slow-check-ms', '5000']);
		const serving = await daemon.waitForLog(entry => entry.msg === 'serving');
		expect(serving['eagerWorkers']).toBe(2 * availableParallelism());
		// More checks at once than that: each worker it may start (maxWorkers is 32) gets one of them.
		const workers = Math.min(2 * availableParallelism(), 32);
		const requests = Array.from({length: 2 * workers + 8}, (_, index) => crowd[index % crowd.length]!);
		expect(await daemon.send(requests.map(({user, password}) => requestLine(user, password)).join(''))).toEqual(requests.map(() => 'ok'));
		await daemon.settled();
		expect(new Set(daemon.requestLogs.map(entry => entry['workerPid'])).size).toBe(workers);
	});

	it('holds a check back until a running one has taken slowCheckMs, then starts a worker for it', async () => {
		const daemon = await start(['--min-workers', '1', '--eager-workers', '1', '--slow-check-ms', '400']);
		const slow = daemon.ask(sam.user, sam.password, 'slow');
		await delay(50);
		const started = Date.now();
		expect(await daemon.ask(alice.user, alice.password)).toBe('ok');
		const waited = Date.now() - started;
		// Not before sam's check is 400 ms old, and well before it ends (it takes 1 s).
		expect(waited).toBeGreaterThanOrEqual(300);
		expect(waited).toBeLessThan(900);
		expect(await slow).toBe('ok');
	});
});

describe('worker failures', () => {
	it('answers fail when a worker is killed mid-check, and ok with the next worker', async () => {
		const daemon = await start();
		const answer = daemon.ask(sam.user, sam.password, 'slow');
		let pid: number | undefined;
		for (let tries = 0; pid === undefined && tries < 50; tries++) {
			// eslint-disable-next-line no-await-in-loop
			await delay(20);
			pid = busyWorker(daemon);
		}

		expect(pid).toBeDefined();
		process.kill(pid!, 'SIGKILL');
		expect(await answer).toBe('fail');
		const log = await daemon.waitForLog(entry => entry.msg === 'request' && String(entry['reason']).includes('SIGKILL'));
		expect(log['reason']).toBe('worker killed by SIGKILL');
		expect(await daemon.ask(alice.user, alice.password)).toBe('ok');
	});

	it('kills a check that runs past checkTimeoutMs, with what its module started', async () => {
		const daemon = await start(['--check-timeout-ms', '500']);
		const started = Date.now();
		expect(await daemon.ask(alice.user, alice.password, 'hang')).toBe('fail');
		expect(Date.now() - started).toBeLessThan(3000);
		await daemon.waitForLog(entry => entry['reason'] === 'check timed out after 500 ms');
		await delay(200);
		// pam_exec's `sleep 600` went with its worker's process group.
		const sleepers = execFileSync('ps', ['-eo', 'args='], {encoding: 'utf8'}).split('\n').filter(args => args === '/bin/sleep 600');
		expect(sleepers).toEqual([]);
		expect(await daemon.ask(alice.user, alice.password)).toBe('ok');
	});

	it('replaces a worker after maxChecksPerWorker checks', async () => {
		const daemon = await start(['--min-workers', '1', '--max-workers', '1', '--max-checks-per-worker', '2']);
		for (let index = 0; index < 5; index++) {
			// eslint-disable-next-line no-await-in-loop
			expect(await daemon.ask(alice.user, alice.password)).toBe('ok');
		}

		await daemon.waitForLog(entry => entry.msg === 'request' && daemon.requestLogs.length >= 5);
		const pids = daemon.requestLogs.map(entry => entry['workerPid']);
		expect(pids[0]).toBe(pids[1]);
		expect(pids[2]).not.toBe(pids[1]);
		expect(pids[2]).toBe(pids[3]);
		expect(pids[4]).not.toBe(pids[3]);
	});

	it('keeps minWorkers running, replacing one that dies while idle', async () => {
		const daemon = await start(['--min-workers', '3']);
		await delay(100);
		const before = workerPids(daemon);
		expect(before).toHaveLength(3);
		process.kill(before[0]!, 'SIGKILL');
		await delay(300);
		const after = workerPids(daemon);
		expect(after).toHaveLength(3);
		expect(after).not.toContain(before[0]);
	});

	it('stops workers above minWorkers once they have been idle for workerIdleTimeoutMs', async () => {
		const daemon = await start(['--min-workers', '1', '--worker-idle-timeout-ms', '300']);
		await Promise.all(slowUsers.slice(0, 4).map(async ({user, password}) => daemon.ask(user, password, 'slow')));
		expect(workerPids(daemon).length).toBeGreaterThanOrEqual(4);
		await delay(1000);
		expect(workerPids(daemon)).toHaveLength(1);
	});

	it('answers fail, and keeps serving, when the worker program cannot start', async () => {
		const daemon = await start(['--worker-path', '/nonexistent/pam-authservice-worker', '--min-workers', '0']);
		expect(await daemon.ask(alice.user, alice.password)).toBe('fail');
		expect(daemon.process.exitCode).toBeNull();
	});
});

describe('the worker process', () => {
	it('holds no password in its command line', async () => {
		const daemon = await start(['--min-workers', '1']);
		const pending = daemon.ask(sam.user, sam.password, 'slow');
		await delay(300);
		for (const pid of workerPids(daemon)) {
			const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'latin1');
			expect(cmdline).not.toContain(sam.password);
		}

		expect(await pending).toBe('ok');
	});
});

describe('SIGTERM', () => {
	it('answers every request already read, removes the socket and exits 0', async () => {
		const daemon = await start();
		const socket = await connect(daemon.socketPath);
		const [first, second] = slowUsers as [typeof sam, typeof sam];
		const answers = readLines(socket, 3, 10_000);
		socket.write(requestLine(first.user, first.password, 'slow') + requestLine(second.user, second.password, 'slow') + requestLine(alice.user, wrongPassword));
		await delay(200);
		daemon.process.kill('SIGTERM');
		expect(await answers).toEqual(['ok', 'ok', 'fail']);
		await daemon.exited;
		expect(daemon.exitCode).toBe(0);
		expect(existsSync(daemon.socketPath)).toBe(false);
		expect(workerPids(daemon)).toEqual([]);
		expect(daemon.logs.some(line => line.msg === 'stopped')).toBe(true);
	});

	it('answers fail for checks still running after shutdownTimeoutMs', async () => {
		const daemon = await start(['--shutdown-timeout-ms', '200']);
		const answer = daemon.ask(alice.user, alice.password, 'hang');
		await delay(200);
		const started = Date.now();
		daemon.process.kill('SIGTERM');
		expect(await answer).toBe('fail');
		await daemon.exited;
		expect(daemon.exitCode).toBe(0);
		expect(Date.now() - started).toBeLessThan(3000);
	});
});
