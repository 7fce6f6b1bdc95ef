/**
Throttling that parallel requests cannot bypass.

Per (service, user): after `freeFailures` failures, each further failure holds its answer back,
`backoffBaseMs` doubling up to `backoffMaxMs`, and requests for that key wait in line behind the
penalty (at most `maxWaitingPerKey` of them), so ten parallel guesses take ten penalties, not one.
Repeating the same wrong password does not escalate: only an HMAC of the last wrong password is
kept, keyed with a secret made at start.

Per caller uid: a failure budget (a token bucket, `failureBudgetPerSecond`, burst
`failureBudgetBurst`) that slows spraying one password over many user names. A caller over its
budget has its checks held until the bucket refills. Never exponential backoff per caller: a broker
is one caller for all its users, and one user mistyping must not lock everyone else out.

Memory stays bounded: at most `maxThrottleKeys` keys (least recently used go first) and at most
`maxWaitingChecks` requests waiting in all.
*/
import {createHmac, randomBytes, timingSafeEqual} from 'node:crypto';
import {performance} from 'node:perf_hooks';
import {setTimeout as sleep} from 'node:timers/promises';
import {RecencyList, type Listed} from './recency.js';

export type ThrottleOptions = {
	readonly freeFailures: number;
	readonly backoffBaseMs: number;
	readonly backoffMaxMs: number;
	readonly failureWindowMs: number;
	readonly maxWaitingPerKey: number;
	readonly maxWaitingChecks: number;
	readonly maxThrottleKeys: number;
	readonly failureBudgetPerSecond: number;
	readonly failureBudgetBurst: number;
};

/** A request's turn: it holds its key's line until `finish()` says how long the answer is held. */
export type Turn = {
	/**
	Record the check's result.
	@param password The password that was checked, not yet zeroed: a wrong one is kept as its HMAC
	(a success needs none, and computing one was 4 % of the daemon's time a request).
	@returns How long to hold the answer back, in ms (the key's line is held as long).
	*/
	finish(ok: boolean, password: Buffer): number;
	/** Give the turn up without a check (the caller went away): nothing is recorded but the token comes back. */
	cancel(): void;
};

export type Refusal = {readonly refused: string};

type KeyState = {
	readonly key: string;
	failures: number;
	lastFailureAt: number;
	lastWrong: Buffer | undefined;
	/** Checks running for this key now. */
	running: number;
	/** No check for this key starts before this time (`performance.now()`): the last penalty. */
	heldUntil: number;
	/** Requests waiting their turn, first come first served. */
	readonly waiters: Array<() => void>;
	/** Set while a timer will wake the line when `heldUntil` passes. */
	wakeTimer: NodeJS.Timeout | undefined;
	/** Its neighbours by time of last use (`#keyOrder`). */
	older: KeyState | undefined;
	newer: KeyState | undefined;
};

type Bucket = {
	/** The caller's uid: its key in `#buckets`. */
	readonly key: number;
	tokens: number;
	updatedAt: number;
	/** Its neighbours by time of last use (`#bucketOrder`). */
	older: Bucket | undefined;
	newer: Bucket | undefined;
};

export class Throttle {
	#options: ThrottleOptions;
	readonly #secret = randomBytes(32);
	// Looked up by the maps, kept in order of last use by the lists (the least recently used go
	// first): a delete and a set on every request would keep the maps' tables churning.
	readonly #keys = new Map<string, KeyState>();
	readonly #keyOrder = new RecencyList<KeyState>();
	readonly #buckets = new Map<number, Bucket>();
	readonly #bucketOrder = new RecencyList<Bucket>();
	#waiting = 0;

	constructor(options: ThrottleOptions) {
		this.#options = options;
	}

	/** New limits for what follows; what is remembered stays. */
	reconfigure(options: ThrottleOptions): void {
		this.#options = options;
	}

	/** An HMAC of the password: enough to tell a repeated wrong password, useless to anyone else. */
	#fingerprint(password: Buffer): Buffer {
		return createHmac('sha256', this.#secret).update(password).digest();
	}

	/** Keys and waiting requests held now (for tests and status lines). */
	get size(): {keys: number; buckets: number; waiting: number} {
		return {keys: this.#keys.size, buckets: this.#buckets.size, waiting: this.#waiting};
	}

	/**
	This request's turn: behind the key's line, then within the caller's failure budget.
	Most requests may start at once and get their turn at once, not a promise of it: as an async
	function, this was 6 % of what the daemon allocated for a request (a heap profile under load).
	@returns A turn, a refusal (answer `fail` at once) when a line is full, or a promise of either.
	*/
	enter(service: string, user: string, uid: number): Turn | Refusal | Promise<Turn | Refusal> {
		const state = this.#touch(`${service}\0${user}`);
		if (!this.#mayStart(state) || state.waiters.length > 0) {
			return this.#waitInLine(state, uid);
		}

		state.running++;
		return this.#withinBudget(state, uid);
	}

	async #waitInLine(state: KeyState, uid: number): Promise<Turn | Refusal> {
		if (state.waiters.length >= this.#options.maxWaitingPerKey) {
			return {refused: `more than ${this.#options.maxWaitingPerKey} requests waiting for this user`};
		}

		if (this.#waiting >= this.#options.maxWaitingChecks) {
			return {refused: `more than ${this.#options.maxWaitingChecks} requests waiting in all`};
		}

		this.#waiting++;
		try {
			// `#wake` counts this request as running before it lets it go.
			await new Promise<void>(resolve => {
				state.waiters.push(resolve);
				this.#wake(state);
			});
		} finally {
			this.#waiting--;
		}

		return this.#withinBudget(state, uid);
	}

	/** For a request that holds its place in the key's line: its turn now if its caller has a token, else once one has come back. */
	#withinBudget(state: KeyState, uid: number): Turn | Promise<Turn> {
		return this.#takeToken(uid) ? this.#turn(state, uid) : this.#waitForBudget(state, uid);
	}

	/** For a request that may run but whose caller has no token left: until one has come back. */
	async #waitForBudget(state: KeyState, uid: number): Promise<Turn> {
		this.#waiting++;
		try {
			do {
				const bucket = this.#bucket(uid, performance.now());
				// eslint-disable-next-line no-await-in-loop
				await sleep(Math.ceil((1 - bucket.tokens) / this.#options.failureBudgetPerSecond * 1000));
			} while (!this.#takeToken(uid));
		} finally {
			this.#waiting--;
		}

		return this.#turn(state, uid);
	}

	/** A request that holds a place in its key's line (`running`) and a token of its caller's budget. */
	#turn(state: KeyState, uid: number): Turn {
		let finished = false;
		const done = (holdMs: number): void => {
			if (finished) {
				throw new Error('A turn can finish only once');
			}

			finished = true;
			state.running--;
			state.heldUntil = Math.max(state.heldUntil, performance.now() + holdMs);
			this.#wake(state);
		};

		return {
			finish: (ok, password) => {
				const holdMs = this.#record(state, uid, ok, password);
				done(holdMs);
				return holdMs;
			},
			cancel: () => {
				this.#refund(uid);
				done(0);
			},
		};
	}

	/**
	How many checks of one key may run at once: the failures still free may be spent in parallel,
	since they cost nothing anyway; past them, one at a time, each after the last one's penalty.
	*/
	#mayStart(state: KeyState): boolean {
		const parallel = Math.max(1, this.#options.freeFailures - state.failures);
		return state.running < parallel && performance.now() >= state.heldUntil;
	}

	/** Let the next waiters in when they may start, or come back when the penalty has passed. */
	#wake(state: KeyState): void {
		while (state.waiters.length > 0 && this.#mayStart(state)) {
			// Counted as running now, not when the waiter resumes: a request arriving in between
			// must see the place taken.
			state.running++;
			state.waiters.shift()!();
		}

		const waitMs = state.heldUntil - performance.now();
		if (state.waiters.length > 0 && waitMs > 0 && state.wakeTimer === undefined) {
			state.wakeTimer = setTimeout(() => {
				state.wakeTimer = undefined;
				this.#wake(state);
			}, Math.ceil(waitMs));
			state.wakeTimer.unref();
		}
	}

	#record(state: KeyState, uid: number, ok: boolean, password: Buffer): number {
		const now = performance.now();
		if (ok) {
			// The token taken at entry goes back: only failures count against the budget.
			this.#refund(uid);
			state.failures = 0;
			state.lastWrong = undefined;
			return 0;
		}

		if (now - state.lastFailureAt > this.#options.failureWindowMs) {
			state.failures = 0;
			state.lastWrong = undefined;
		}

		state.lastFailureAt = now;
		const fingerprint = this.#fingerprint(password);
		const repeated = state.lastWrong !== undefined && timingSafeEqual(state.lastWrong, fingerprint);
		if (!repeated) {
			state.failures++;
			state.lastWrong = fingerprint;
		}

		return this.penaltyMs(state.failures);
	}

	/** The hold after the `failures`th failure in a row. */
	penaltyMs(failures: number): number {
		const {freeFailures, backoffBaseMs, backoffMaxMs} = this.#options;
		if (failures <= freeFailures) {
			return 0;
		}

		return Math.min(backoffMaxMs, backoffBaseMs * 2 ** Math.min(failures - freeFailures - 1, 30));
	}

	#touch(key: string): KeyState {
		let state = this.#keys.get(key);
		if (!state) {
			this.#evict(this.#keys, this.#keyOrder, this.#options.maxThrottleKeys - 1, candidate => candidate.running === 0 && candidate.waiters.length === 0 && candidate.heldUntil <= performance.now());
			state = {key, failures: 0, lastFailureAt: 0, lastWrong: undefined, running: 0, heldUntil: 0, waiters: [], wakeTimer: undefined, older: undefined, newer: undefined};
			this.#keys.set(key, state);
		}

		this.#keyOrder.touch(state);
		return state;
	}

	/** Drop the least recently used entries that are `idle`, from the map and its order, until `keep` are left. */
	#evict<K, V extends Listed<V> & {readonly key: K}>(map: Map<K, V>, order: RecencyList<V>, keep: number, idle: (value: V) => boolean): void {
		// Busy keys are skipped; there are at most `maxWaitingChecks` plus the checks running.
		let scanned = 0;
		for (const value of order) {
			if (order.size <= keep || scanned++ > 1000) {
				break;
			}

			if (idle(value)) {
				order.delete(value);
				map.delete(value.key);
			}
		}
	}

	#bucket(uid: number, now: number): Bucket {
		let bucket = this.#buckets.get(uid);
		if (bucket) {
			const {failureBudgetBurst, failureBudgetPerSecond} = this.#options;
			bucket.tokens = Math.min(failureBudgetBurst, bucket.tokens + (now - bucket.updatedAt) / 1000 * failureBudgetPerSecond);
			bucket.updatedAt = now;
		} else {
			this.#evict(this.#buckets, this.#bucketOrder, this.#options.maxThrottleKeys - 1, candidate => candidate.tokens >= this.#options.failureBudgetBurst);
			bucket = {key: uid, tokens: this.#options.failureBudgetBurst, updatedAt: now, older: undefined, newer: undefined};
			this.#buckets.set(uid, bucket);
		}

		this.#bucketOrder.touch(bucket);
		return bucket;
	}

	#refund(uid: number): void {
		const bucket = this.#bucket(uid, performance.now());
		bucket.tokens = Math.min(this.#options.failureBudgetBurst, bucket.tokens + 1);
	}

	/**
	Take a token before the check runs (given back on success), so that parallel requests cannot
	all pass on the strength of one token.
	*/
	#takeToken(uid: number): boolean {
		const bucket = this.#bucket(uid, performance.now());
		if (bucket.tokens < 1) {
			return false;
		}

		bucket.tokens -= 1;
		return true;
	}
}
