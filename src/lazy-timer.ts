/**
A time-out that moves later with every use, checked lazily: a connection's idle time-out, a
check's, an idle worker's.

Re-arming a Node.js timer at each use (a `setTimeout` for each connection and each check, a
`clearTimeout` for each, two `refresh()` for each request, a `setTimeout` for each worker going
idle) allocated 600 of the 15 000 bytes the daemon allocated for a request (a heap profile, one
request per connection), each to be collected again. Instead, a user notes the time of its last
use and calls `arm()`: a timer already armed stays as it is, since the deadline can only have
moved later. When it fires, `check` looks at the state and does what has fallen due, and returns
how long until something may fall due next (the timer is armed again for that) or `undefined`
(nothing pending: it stays unarmed until the next `arm()`). A deadline that moves earlier (a
shorter time-out after a reload) needs `recheck()`.

The timer is unreferenced: what it watches (a socket, a worker's pipe) keeps the process alive,
and an idle process must be able to exit with one still armed.
*/
export class LazyTimer {
	#timer: NodeJS.Timeout | undefined;

	/** @param check Does what is due; @returns the ms until the next check, or `undefined` for none. */
	constructor(private readonly check: () => number | undefined) {}

	get armed(): boolean {
		return this.#timer !== undefined;
	}

	/** Make sure `check` runs within `ms`: a timer already armed fires sooner, and stays. */
	arm(ms: number): void {
		if (this.#timer === undefined) {
			// A timer may fire up to a millisecond early by `performance.now()`: `check` then asks for
			// the rest, rounded up (Node.js makes anything under 1 ms 1 ms), so that it never spins.
			this.#timer = setTimeout(this.#fire, Math.ceil(ms));
			this.#timer.unref();
		}
	}

	/** Check again at once if armed: a deadline may have moved earlier. Unarmed, nothing is pending. */
	recheck(): void {
		if (this.#timer !== undefined) {
			this.cancel();
			this.arm(0);
		}
	}

	cancel(): void {
		clearTimeout(this.#timer);
		this.#timer = undefined;
	}

	readonly #fire = (): void => {
		this.#timer = undefined;
		const next = this.check();
		if (next !== undefined) {
			this.arm(next);
		}
	};
}
