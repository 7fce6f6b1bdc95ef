import {describe, expect, it} from 'vitest';
import {Throttle, type ThrottleOptions, type Turn} from '../../src/throttle.js';

const defaults: ThrottleOptions = {
	freeFailures: 3,
	backoffBaseMs: 1000,
	backoffMaxMs: 30_000,
	failureWindowMs: 900_000,
	maxWaitingPerKey: 4,
	maxWaitingChecks: 10_000,
	maxThrottleKeys: 100_000,
	failureBudgetPerSecond: 20,
	failureBudgetBurst: 100,
};

async function turn(throttle: Throttle, user: string, uid = 1000, service = 'x2gobroker'): Promise<Turn> {
	const entered = await throttle.enter(service, user, uid);
	if ('refused' in entered) {
		throw new Error(`refused: ${entered.refused}`);
	}

	return entered;
}

describe('Throttle', () => {
	it('lets the first failures go free, then doubles up to the maximum', () => {
		const throttle = new Throttle(defaults);
		expect([1, 2, 3, 4, 5, 6, 8, 9, 40].map(failures => throttle.penaltyMs(failures))).toEqual([0, 0, 0, 1000, 2000, 4000, 16_000, 30_000, 30_000]);
	});

	it('escalates for different wrong passwords, not for the same one repeated, and a success resets', async () => {
		const throttle = new Throttle({...defaults, freeFailures: 1, backoffBaseMs: 1});
		const holds: number[] = [];
		for (const password of ['a1', 'a2', 'a3', 'a3', 'a3', 'a4']) {
			// eslint-disable-next-line no-await-in-loop
			holds.push((await turn(throttle, 'alice')).finish(false, Buffer.from(password)));
		}

		expect(holds).toEqual([0, 1, 2, 2, 2, 4]);
		expect((await turn(throttle, 'alice')).finish(true, Buffer.from('right'))).toBe(0);
		expect((await turn(throttle, 'alice')).finish(false, Buffer.from('a5'))).toBe(0);
	});

	it('remembers a wrong password by its HMAC, not by the buffer it was given (zeroed after)', async () => {
		const throttle = new Throttle({...defaults, freeFailures: 1, backoffBaseMs: 1});
		const fail = async (password: string) => {
			const buffer = Buffer.from(password);
			const holdMs = (await turn(throttle, 'alice')).finish(false, buffer);
			buffer.fill(0);
			return holdMs;
		};

		expect(await fail('a1')).toBe(0);
		expect(await fail('a2')).toBe(1);
		// The same wrong password again: no escalation, although the first buffer is zeros now.
		expect(await fail('a2')).toBe(1);
		// Zeros of the same length are another password.
		expect(await fail('\0\0')).toBe(2);
	});

	it('gives a request that may start its turn at once, not a promise of one', () => {
		const throttle = new Throttle(defaults);
		const entered = throttle.enter('x2gobroker', 'alice', 1);
		expect(entered).not.toBeInstanceOf(Promise);
		expect('finish' in entered && entered.finish(true, Buffer.from('right'))).toBe(0);
	});

	it('makes parallel requests for one key wait in line, each after the last one\'s penalty', async () => {
		const throttle = new Throttle({...defaults, freeFailures: 0, backoffBaseMs: 50, backoffMaxMs: 50, maxWaitingPerKey: 10});
		const started = performance.now();
		const finishedAt = await Promise.all(Array.from({length: 5}, async (_, index) => {
			const entered = await turn(throttle, 'alice');
			entered.finish(false, Buffer.from(`guess-${index}`));
			return performance.now() - started;
		}));
		// Each one entered after the one before had served 50 ms.
		expect(Math.max(...finishedAt)).toBeGreaterThanOrEqual(190);
	});

	it('lets the free failures run in parallel, and no more', async () => {
		const throttle = new Throttle({...defaults, freeFailures: 3});
		const running = await Promise.all([turn(throttle, 'alice'), turn(throttle, 'alice'), turn(throttle, 'alice')]);
		let fourthStarted = false;
		const fourth = turn(throttle, 'alice').then(entered => {
			fourthStarted = true;
			return entered;
		});
		await new Promise(resolve => setTimeout(resolve, 50));
		expect(fourthStarted).toBe(false);
		running[0]!.finish(true, Buffer.alloc(32));
		(await fourth).finish(true, Buffer.alloc(32));
		expect(fourthStarted).toBe(true);
		for (const entered of running.slice(1)) {
			entered.finish(true, Buffer.alloc(32));
		}
	});

	it('never lets a request arriving as a waiter is released run beside it', async () => {
		const throttle = new Throttle({...defaults, freeFailures: 0});
		const first = await turn(throttle, 'alice');
		let running = 1;
		let most = 1;
		const track = async (entered: Promise<Turn>) => {
			const held = await entered;
			running++;
			most = Math.max(most, running);
			await new Promise(resolve => setTimeout(resolve, 5));
			running--;
			held.finish(true, Buffer.alloc(32));
		};

		const waiter = track(turn(throttle, 'alice'));
		running--;
		first.finish(true, Buffer.alloc(32));
		// In the same tick as the release: must wait behind the waiter, not start beside it.
		const latecomer = track(turn(throttle, 'alice'));
		await Promise.all([waiter, latecomer]);
		expect(most).toBe(1);
	});

	it('keeps other keys free while one is in penalty', async () => {
		const throttle = new Throttle({...defaults, freeFailures: 0, backoffBaseMs: 5000});
		(await turn(throttle, 'alice')).finish(false, Buffer.from('x'));
		const started = performance.now();
		await turn(throttle, 'bob');
		expect(performance.now() - started).toBeLessThan(100);
	});

	it('refuses beyond maxWaitingPerKey and beyond maxWaitingChecks', async () => {
		const throttle = new Throttle({...defaults, freeFailures: 0, maxWaitingPerKey: 2, maxWaitingChecks: 3});
		const running = await turn(throttle, 'alice');
		const waiting = [throttle.enter('x2gobroker', 'alice', 1), throttle.enter('x2gobroker', 'alice', 1)];
		expect(await throttle.enter('x2gobroker', 'alice', 1)).toEqual({refused: 'more than 2 requests waiting for this user'});
		const bob = await turn(throttle, 'bob');
		const bobWaiting = throttle.enter('x2gobroker', 'bob', 1);
		expect(await throttle.enter('x2gobroker', 'bob', 1)).toEqual({refused: 'more than 3 requests waiting in all'});
		running.finish(true, Buffer.alloc(32));
		bob.finish(true, Buffer.alloc(32));
		// Each waiter gets its turn once the one before it has finished.
		for (const pending of [...waiting, bobWaiting]) {
			// eslint-disable-next-line no-await-in-loop
			const entered = await pending;
			expect('finish' in entered).toBe(true);
			if ('finish' in entered) {
				entered.finish(true, Buffer.alloc(32));
			}
		}
	});

	it('holds a caller over its failure budget until the bucket refills, and no other caller', async () => {
		const throttle = new Throttle({...defaults, failureBudgetBurst: 5, failureBudgetPerSecond: 10});
		// The whole burst and one more: the bucket is one failure in debt.
		for (let index = 0; index < 6; index++) {
			// eslint-disable-next-line no-await-in-loop
			(await turn(throttle, `user${index}`, 1)).finish(false, Buffer.alloc(32, index));
		}

		let started = performance.now();
		await turn(throttle, 'other', 2);
		expect(performance.now() - started).toBeLessThan(50);
		started = performance.now();
		await turn(throttle, 'user9', 1);
		expect(performance.now() - started).toBeGreaterThanOrEqual(80);
	});

	it('gives a cancelled turn\'s place and token back without recording a failure', async () => {
		const throttle = new Throttle({...defaults, freeFailures: 0, backoffBaseMs: 5000, failureBudgetBurst: 1, failureBudgetPerSecond: 1});
		(await turn(throttle, 'alice')).cancel();
		const started = performance.now();
		// Neither the key's line nor the caller's single token is held by the cancelled turn.
		expect((await turn(throttle, 'alice')).finish(false, Buffer.alloc(32))).toBe(5000);
		expect(performance.now() - started).toBeLessThan(100);
	});

	it('stays within maxThrottleKeys under a flood of user names', async () => {
		const throttle = new Throttle({...defaults, maxThrottleKeys: 100, failureBudgetBurst: 1e9});
		for (let index = 0; index < 1000; index++) {
			// eslint-disable-next-line no-await-in-loop
			(await turn(throttle, `random-${index}`)).finish(false, Buffer.alloc(32));
		}

		expect(throttle.size.keys).toBeLessThanOrEqual(100);
		expect(throttle.size.waiting).toBe(0);
	});

	it('forgets the least recently used key first', async () => {
		const throttle = new Throttle({...defaults, freeFailures: 1, backoffBaseMs: 1, maxThrottleKeys: 3});
		const fail = async (user: string, password: string) => (await turn(throttle, user)).finish(false, Buffer.from(password));
		for (const user of ['a', 'b', 'c']) {
			// eslint-disable-next-line no-await-in-loop
			expect(await fail(user, 'first')).toBe(0);
		}

		// `a` used again (its second failure), then a fourth key: `b` is now the one unused longest.
		expect(await fail('a', 'second')).toBe(1);
		expect(await fail('d', 'first')).toBe(0);
		expect(throttle.size.keys).toBe(3);
		// `a` and `c` remember their failures; `b` starts again from nothing.
		expect(await fail('a', 'third')).toBe(2);
		expect(await fail('c', 'second')).toBe(1);
		expect(await fail('b', 'second')).toBe(0);
	});
});
