import {afterEach, beforeEach, describe, expect, it, vi} from 'vitest';
import {LazyTimer} from '../../src/lazy-timer.js';

beforeEach(() => {
	vi.useFakeTimers();
});

afterEach(() => {
	vi.useRealTimers();
});

type IdleWatch = {lastUseAt: number; fired: number; checks: number; readonly timer: LazyTimer; use(): void};

/** A deadline `timeoutMs` after the last use, as a connection's idle time-out keeps it. */
function idleWatch(timeoutMs: number): IdleWatch {
	const watch: IdleWatch = {
		lastUseAt: Date.now(),
		fired: 0,
		checks: 0,
		timer: new LazyTimer(() => {
			watch.checks++;
			const leftMs = watch.lastUseAt + timeoutMs - Date.now();
			if (leftMs > 0) {
				return leftMs;
			}

			watch.fired++;
			return undefined;
		}),
		use() {
			watch.lastUseAt = Date.now();
			watch.timer.arm(timeoutMs);
		},
	};
	return watch;
}

describe('LazyTimer', () => {
	it('keeps one timer however often it is armed, and fires a time-out after the last use', () => {
		const setTimeoutSpy = vi.spyOn(globalThis, 'setTimeout');
		const watch = idleWatch(1000);
		for (let use = 0; use < 50; use++) {
			watch.use();
			vi.advanceTimersByTime(100);
		}

		// 50 uses over 5 s: the timer was armed at the first use, and again each time it found
		// the deadline moved (about once a second), not at each use.
		expect(setTimeoutSpy.mock.calls.length).toBeLessThanOrEqual(6);
		expect(watch.fired).toBe(0);
		const lastUseAt = watch.lastUseAt;
		vi.advanceTimersByTime(899);
		expect(watch.fired).toBe(0);
		vi.advanceTimersByTime(2);
		expect(watch.fired).toBe(1);
		expect(Date.now() - lastUseAt).toBeLessThanOrEqual(1001);
		expect(watch.timer.armed).toBe(false);
	});

	it('stays unarmed once nothing is pending, and arms again at the next use', () => {
		const watch = idleWatch(200);
		watch.use();
		vi.advanceTimersByTime(10_000);
		expect(watch.fired).toBe(1);
		expect(watch.checks).toBe(1);
		watch.use();
		expect(watch.timer.armed).toBe(true);
		vi.advanceTimersByTime(200);
		expect(watch.fired).toBe(2);
	});

	it('recheck() looks at once, for a deadline that has moved earlier', () => {
		let timeoutMs = 60_000;
		let fired = false;
		const startedAt = Date.now();
		const timer = new LazyTimer(() => {
			const leftMs = startedAt + timeoutMs - Date.now();
			if (leftMs > 0) {
				return leftMs;
			}

			fired = true;
			return undefined;
		});
		timer.arm(timeoutMs);
		timeoutMs = 500;
		vi.advanceTimersByTime(600);
		// Armed for the old time-out, it has not looked yet.
		expect(fired).toBe(false);
		timer.recheck();
		vi.advanceTimersByTime(1);
		expect(fired).toBe(true);
	});

	it('recheck() of an unarmed timer looks at nothing: nothing is pending', () => {
		const watch = idleWatch(100);
		watch.timer.recheck();
		vi.advanceTimersByTime(1000);
		expect(watch.checks).toBe(0);
		expect(watch.timer.armed).toBe(false);
	});

	it('cancel() stops it; a check that finds its deadline not quite reached is armed again for the rest', () => {
		const watch = idleWatch(100);
		watch.use();
		watch.timer.cancel();
		vi.advanceTimersByTime(1000);
		expect(watch.checks).toBe(0);

		let calls = 0;
		const early = new LazyTimer(() => {
			calls++;
			return calls === 1 ? 0.2 : undefined;
		});
		early.arm(10);
		vi.advanceTimersByTime(10);
		expect(calls).toBe(1);
		expect(early.armed).toBe(true);
		vi.advanceTimersByTime(1);
		expect(calls).toBe(2);
		expect(early.armed).toBe(false);
	});
});
