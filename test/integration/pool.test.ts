/**
The worker pool in this process, with real workers on a real PAM stack: what only shows when the
test holds the pool's event loop, as a busy daemon's is held.
*/
import {mkdtempSync, rmSync, writeFileSync} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {pino} from 'pino';
import {afterAll, beforeAll, describe, expect, it} from 'vitest';
import {defaultConfig} from '../../src/config.js';
import {WorkerPool} from '../../src/pool.js';
import {createPamSandbox, matrixStack} from '../../src/sandbox.js';
import type {CheckRequest} from '../../src/worker-protocol.js';
import {alice} from '../fixtures/users.js';
import {repositoryRoot} from '../helpers/daemon.js';

let directory: string;
const saved: Record<string, string | undefined> = {};

beforeAll(() => {
	directory = mkdtempSync(path.join(os.tmpdir(), 'pam-authservice-pool-'));
	const sandbox = createPamSandbox({directory, users: [alice], services: {x2gobroker: matrixStack}});
	// The pool starts its workers with this process's environment: pam_wrapper's, for these tests.
	for (const [name, value] of Object.entries(sandbox.environment)) {
		saved[name] = process.env[name];
		process.env[name] = value;
	}
});

afterAll(() => {
	for (const [name, value] of Object.entries(saved)) {
		if (value === undefined) {
			delete process.env[name];
		} else {
			process.env[name] = value;
		}
	}

	rmSync(directory, {recursive: true, force: true});
});

function request(): CheckRequest {
	return {user: Buffer.from(alice.user), password: Buffer.from(alice.password), service: Buffer.from(alice.service), ruser: Buffer.from('')};
}

/** Keep the event loop from turning, as a daemon busy with other work does. */
function holdEventLoop(ms: number): void {
	const until = performance.now() + ms;
	while (performance.now() < until) {
		// Nothing: the point is that no callback runs.
	}
}

describe('pool growth', () => {
	it('does not take a check whose answer waits unread in the pipe for a slow one', async () => {
		const pool = new WorkerPool({...defaultConfig(), minWorkers: 1, eagerWorkers: 1, slowCheckMs: 50, workerPath: path.join(repositoryRoot, 'build/pam-authservice-worker')}, pino({level: 'silent'}));
		try {
			// The worker has started and loaded the stack.
			expect((await pool.check(request())).ok).toBe(true);
			const first = pool.check(request());
			const second = pool.check(request());
			expect(pool.stats).toMatchObject({workers: 1, busy: 1, queued: 1});
			// The first check ends within a few ms, but its answer is read only once the loop turns;
			// by then the pool's timer, due at 50 ms, fires first.
			holdEventLoop(1000);
			const outcomes = await Promise.all([first, second]);
			expect(outcomes.map(outcome => outcome.ok)).toEqual([true, true]);
			expect(outcomes[1]!.workerPid).toBe(outcomes[0]!.workerPid);
			expect(pool.stats.workers).toBe(1);
		} finally {
			await pool.close();
		}
	});
});

describe('pool growth for slow checks', () => {
	/** A worker that reads the first byte of a request and then never answers: it does `then` instead. */
	function stuckWorker(name: string, then: string): string {
		const workerPath = path.join(directory, name);
		writeFileSync(workerPath, `#!/bin/sh\nhead -c 1 >/dev/null\n${then}\n`, {mode: 0o755});
		return workerPath;
	}

	async function workersAfterSlowChecks(workerPath: string): Promise<number> {
		const pool = new WorkerPool({...defaultConfig(), minWorkers: 1, eagerWorkers: 1, maxWorkers: 4, slowCheckMs: 20, workerPath}, pino({level: 'silent'}));
		const checks = [pool.check(request()), pool.check(request()), pool.check(request())];
		try {
			// Ten times the slow-check time: the pool has had every chance to grow.
			await new Promise(resolve => {
				setTimeout(resolve, 200);
			});
			return pool.stats.workers;
		} finally {
			await pool.close();
			await Promise.all(checks);
		}
	}

	it('grows for checks whose workers wait', async () => {
		expect(await workersAfterSlowChecks(stuckWorker('sleeping-worker', 'exec sleep 60'))).toBe(3);
	});

	it('grows for a check that computed first and waits now, while requests keep coming', async () => {
		// Computes for 150 ms, then sleeps: the pool must look again, however often it is asked.
		const workerPath = path.join(directory, 'computing-then-sleeping-worker');
		writeFileSync(workerPath, `#!${process.execPath}\nconst end = Date.now() + 150;\nwhile (Date.now() < end) {}\nsetTimeout(() => {}, 60_000);\n`, {mode: 0o755});
		const pool = new WorkerPool({...defaultConfig(), minWorkers: 1, eagerWorkers: 1, maxWorkers: 4, slowCheckMs: 20, workerPath}, pino({level: 'silent'}));
		const checks = [pool.check(request())];
		// A request every 2 ms, each asking the pool whether it may grow: more often than the
		// quarter of slowCheckMs after which a worker found computing is looked at again.
		const arrivals = setInterval(() => checks.push(pool.check(request())), 2);
		try {
			await new Promise(resolve => {
				setTimeout(resolve, 600);
			});
			expect(pool.stats.workers).toBeGreaterThan(1);
		} finally {
			clearInterval(arrivals);
			await pool.close();
			await Promise.all(checks);
		}
	});

	it('does not grow for checks whose workers compute', async () => {
		// A worker that runs (or waits for a CPU) would only compete with another one for the CPUs.
		expect(await workersAfterSlowChecks(stuckWorker('computing-worker', 'while :; do :; done'))).toBe(1);
	});
});

describe('a worker that breaks the protocol', () => {
	it('answers fail, names the worker and stops it', async () => {
		// Reads the first byte of the request, then sends a frame too short to be a response.
		const workerPath = path.join(directory, 'garbling-worker');
		writeFileSync(workerPath, "#!/bin/sh\nhead -c 1 >/dev/null\nprintf '\\005\\000\\000\\000hello'\nexec sleep 60\n", {mode: 0o755});
		const pool = new WorkerPool({...defaultConfig(), minWorkers: 1, workerPath}, pino({level: 'silent'}));
		try {
			const outcome = await pool.check(request());
			expect(outcome).toMatchObject({ok: false, reason: 'worker sent a malformed response', delayUs: 0, messages: []});
			expect(outcome.workerPid).toBeGreaterThan(0);
			await expect.poll(() => {
				try {
					process.kill(outcome.workerPid!, 0);
					return 'running';
				} catch {
					return 'gone';
				}
			}).toBe('gone');
		} finally {
			await pool.close();
		}
	});
});
