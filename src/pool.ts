/**
The pool of PAM worker processes (`pam-authservice-worker`, C), supervised as Dovecot supervises
its auth workers. Processes, not threads: libpam loads modules under a process-wide lock, a module
that crashes or hangs must not take the daemon with it, and some modules are not thread-safe.

Each worker runs one check at a time. The pool grows on demand to `eagerWorkers` (two a CPU unless
set), and beyond that, up to `maxWorkers`, by one worker for each check that has run `slowCheckMs`
with its worker asleep: a stack that waits (LDAP, Kerberos, pam_exec, a fail delay) gets workers
for its waiting checks, while a stack that computes, or a check held up because the CPUs are busy,
gains nothing from more workers than cores but their memory. It shrinks to
`minWorkers` when idle, queues at most `maxQueuedChecks`, kills a worker whose check outlives
`checkTimeoutMs` and replaces one after `maxChecksPerWorker` checks.
*/
import {spawn, type ChildProcessByStdio} from 'node:child_process';
import {readdirSync, readFileSync} from 'node:fs';
import {availableParallelism} from 'node:os';
import {performance} from 'node:perf_hooks';
import type {Readable, Writable} from 'node:stream';
import type {Config} from './config.js';
import {LazyTimer} from './lazy-timer.js';
import type {Logger} from './logger.js';
import {decodeResponse, encodeRequest, ResponseReader, type CheckRequest, type PamMessage, type WorkerResult} from './worker-protocol.js';

export type PoolOptions = Pick<Config, 'minWorkers' | 'maxWorkers' | 'eagerWorkers' | 'slowCheckMs' | 'maxQueuedChecks' | 'checkTimeoutMs' | 'maxChecksPerWorker' | 'workerIdleTimeoutMs' | 'workerPath'>;

/** What a check came to. `reason` is for the log only: the caller is told `ok` or `fail`. */
export type CheckOutcome = {
	readonly ok: boolean;
	/** `pam_authenticate: Authentication failure`, `check timed out after 60000 ms`, … */
	readonly reason: string;
	/** The failure delay a PAM module asked for; the caller's `fail` is held back by it. */
	readonly delayUs: number;
	readonly messages: readonly PamMessage[];
	/** The worker that ran it, or was running it when it went wrong. */
	readonly workerPid?: number | undefined;
};

/** What the server needs of PAM; integration tests always use the real `WorkerPool`. */
export type PamChecker = {
	check(request: CheckRequest): Promise<CheckOutcome>;
	close(): Promise<void>;
};

/** The outcome of a check PAM never decided: the worker timed out, died or garbled its answer, or none could run it. */
function notRun(reason: string, workerPid?: number): CheckOutcome {
	return {ok: false, reason, delayUs: 0, messages: [], workerPid};
}

type Job = {
	readonly request: CheckRequest;
	readonly resolve: (outcome: CheckOutcome) => void;
};

type ChildWorker = ChildProcessByStdio<Writable, Readable, Readable>;

/**
The fields of /proc/PID/stat after the parenthesised command (which may hold spaces): the state
first, then the parent's pid. Throws when the process is gone.
*/
function statFields(pid: number | string): string[] {
	const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
	return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/**
Whether a process sleeps (state S or D: it waits on a socket, a timer, a child or a disk) rather
than runs or waits for a CPU (R). Any state but R counts as asleep, and so does a process that
cannot be read (one that has just exited): those checks count as slow, as every slow check did
before this was asked.
*/
function asleep(pid: number): boolean {
	try {
		return statFields(pid)[0] !== 'R';
	} catch {
		return true;
	}
}

/** The processes below `pid`, from /proc: found before anything is killed, since orphans are re-parented. */
function descendantsOf(pid: number): number[] {
	const children = new Map<number, number[]>();
	for (const entry of readdirSync('/proc')) {
		if (!/^\d+$/.test(entry)) {
			continue;
		}

		try {
			const parent = Number(statFields(entry)[1]);
			children.set(parent, [...children.get(parent) ?? [], Number(entry)]);
		} catch {
			// Exited while we looked.
		}
	}

	const found: number[] = [];
	for (let queue = [pid]; queue.length > 0;) {
		const next = children.get(queue.pop()!) ?? [];
		found.push(...next);
		queue.push(...next);
	}

	return found;
}

class Worker {
	readonly process: ChildWorker;
	readonly pid: number;
	checks = 0;
	job: Job | undefined;
	/** When the current job was handed over (`performance.now()`). */
	jobStarted = 0;
	/** Until when (`performance.now()`) its slow check counts as computing, not waiting: /proc is read again after. */
	computingUntil = 0;
	/** When its last job ended, or it started. */
	#idleSince = performance.now();
	exited = false;
	retiring = false;
	readonly #checkTimeout = new LazyTimer(() => this.#killIfOverdue());
	readonly #idleTimeout = new LazyTimer(() => this.#stopIfIdleTooLong());
	readonly #reader = new ResponseReader();

	constructor(
		private readonly pool: WorkerPool,
		private readonly logger: Logger,
	) {
		const {options} = pool;
		// Its own session (detached): a Ctrl-C meant for a daemon in the foreground is the daemon's
		// to handle, not the workers'. stdin/stdout carry the frames, stderr its diagnostics.
		this.process = spawn(options.workerPath, [], {stdio: ['pipe', 'pipe', 'pipe'], detached: true});
		this.pid = this.process.pid ?? -1;
		this.process.stdout.on('data', (chunk: Buffer) => {
			this.#onData(chunk);
		});
		this.process.stderr.setEncoding('utf8').on('data', (text: string) => {
			this.logger.warn({workerPid: this.pid, stderr: text.trimEnd().slice(0, 2000)}, 'PAM worker wrote to stderr');
		});
		// A write to a worker that has just died fails with EPIPE; its exit is handled below.
		this.process.stdin.on('error', () => {});
		this.process.on('error', error => {
			this.logger.error({err: error, workerPath: options.workerPath}, 'could not start a PAM worker');
			this.#exit(`worker could not start: ${error.message}`);
		});
		this.process.on('exit', (code, signal) => {
			const how = signal ? `killed by ${signal}` : `exited with code ${code}`;
			if (this.job || !this.retiring) {
				this.logger.warn({workerPid: this.pid, code, signal, busy: this.job !== undefined}, `PAM worker ${how}`);
			}

			this.#exit(`worker ${how}`);
		});
	}

	run(job: Job): void {
		this.job = job;
		this.jobStarted = performance.now();
		this.computingUntil = 0;
		this.checks++;
		const frame = encodeRequest(job.request);
		// The frame holds the password: zero it once the pipe has taken it, not before. The
		// request's own buffers are the caller's to zero.
		this.process.stdin.write(frame, () => frame.fill(0));
		this.#checkTimeout.arm(this.pool.options.checkTimeoutMs);
	}

	/** Let the worker finish on its own: it exits at EOF on stdin. */
	retire(): void {
		this.retiring = true;
		this.#idleTimeout.cancel();
		this.process.stdin.end();
		// A worker stuck in a module would never see the EOF.
		setTimeout(() => {
			this.kill();
		}, 5000).unref();
	}

	/** Kill the worker and every process its modules started (pam_exec's children start their own session). */
	kill(): void {
		this.retiring = true;
		if (!this.exited) {
			for (const pid of [this.pid, ...descendantsOf(this.pid)]) {
				try {
					process.kill(pid, 'SIGKILL');
				} catch {
					// Gone already.
				}
			}
		}
	}

	/** Offer it to the pool for stopping once it has been idle for `workerIdleTimeoutMs`. */
	startIdleTimer(): void {
		this.#idleTimeout.arm(this.pool.options.workerIdleTimeoutMs);
	}

	/** The time-outs may have become shorter (a reload): look again now. */
	recheckTimeouts(): void {
		this.#checkTimeout.recheck();
		this.#idleTimeout.recheck();
	}

	#killIfOverdue(): number | undefined {
		if (!this.job) {
			return undefined;
		}

		const timeoutMs = this.pool.options.checkTimeoutMs;
		const leftMs = this.jobStarted + timeoutMs - performance.now();
		if (leftMs > 0) {
			return leftMs;
		}

		this.kill();
		this.#finish(notRun(`check timed out after ${timeoutMs} ms`, this.pid));
		return undefined;
	}

	#stopIfIdleTooLong(): number | undefined {
		// Busy now: armed again when it is next idle.
		if (this.job || this.retiring || this.exited) {
			return undefined;
		}

		const leftMs = this.#idleSince + this.pool.options.workerIdleTimeoutMs - performance.now();
		if (leftMs > 0) {
			return leftMs;
		}

		this.pool.onIdleTimeout(this);
		return undefined;
	}

	#onData(chunk: Buffer): void {
		let payloads: Buffer[];
		let results: WorkerResult[];
		try {
			payloads = this.#reader.push(chunk);
			results = payloads.map(payload => decodeResponse(payload));
		} catch (error) {
			this.logger.error({err: error, workerPid: this.pid}, 'PAM worker sent a malformed response');
			this.kill();
			this.#finish(notRun('worker sent a malformed response', this.pid));
			return;
		}

		for (const result of results) {
			if (!this.job) {
				this.logger.error({workerPid: this.pid}, 'PAM worker answered a check it was not given');
				this.kill();
				return;
			}

			const ok = result.step === 'none' && result.pamCode === 0;
			this.#finish({
				ok,
				reason: ok ? 'pam: success' : `${result.step}: ${result.text}`,
				delayUs: ok ? 0 : result.delayUs,
				messages: result.messages,
				workerPid: this.pid,
			});
		}
	}

	#finish(outcome: CheckOutcome): void {
		const {job} = this;
		this.job = undefined;
		this.#idleSince = performance.now();
		if (job) {
			job.resolve(outcome);
			this.pool.onWorkerFree(this);
		}
	}

	#exit(reason: string): void {
		if (this.exited) {
			return;
		}

		this.exited = true;
		this.#checkTimeout.cancel();
		this.#idleTimeout.cancel();
		this.#finish(notRun(reason, this.pid));
		this.pool.onWorkerExit(this);
	}

}

export class WorkerPool implements PamChecker {
	#options: PoolOptions;
	readonly #logger: Logger;
	readonly #workers = new Set<Worker>();
	readonly #idle: Worker[] = [];
	readonly #queue: Job[] = [];
	#queueHead = 0;
	#closed = false;
	#respawnTimer: NodeJS.Timeout | undefined;
	/** Set while checks wait and the pool may grow once a running check turns slow. */
	#growTimer: NodeJS.Timeout | undefined;
	/** Set while a slow check is looked at again, once the event loop has read what workers sent. */
	#growCheck: NodeJS.Immediate | undefined;
	#rapidExits = 0;
	/**
	`eagerWorkers` as set, or two a CPU. Worked out when the options are given, not at each
	dispatch: libuv counts the CPUs with a system call and reads the cgroup's CPU quota from /sys,
	which was 6 % of the event loop's time under pipelined load.
	*/
	#eagerWorkers: number;

	constructor(options: PoolOptions, logger: Logger) {
		this.#options = options;
		this.#eagerWorkers = eagerWorkersFor(options);
		this.#logger = logger;
		this.#fillToMinimum();
	}

	/**
	Run one check. Always resolves: a check that could not run is a `fail` with a reason. The
	request's buffers stay the caller's: the pool copies them into the worker's frame (and zeroes
	its copy), the caller zeroes the password once the outcome is in.
	Not an async function, which would wrap the promise below in one more.
	*/
	check(request: CheckRequest): Promise<CheckOutcome> {
		if (this.#closed) {
			return Promise.resolve(notRun('shutting down'));
		}

		if (this.#queuedCount >= this.#options.maxQueuedChecks && this.#idle.length === 0 && this.#workers.size >= this.#options.maxWorkers) {
			this.#logger.warn({queued: this.#queuedCount, maxQueuedChecks: this.#options.maxQueuedChecks}, 'check queue full: answering fail');
			return Promise.resolve(notRun('check queue full'));
		}

		return new Promise(resolve => {
			this.#queue.push({request, resolve});
			this.#dispatch();
		});
	}

	get options(): PoolOptions {
		return this.#options;
	}

	/** `eagerWorkers`, or two a CPU when it is 0: enough to keep every core busy with checks that compute. */
	get eagerWorkers(): number {
		return this.#eagerWorkers;
	}

	/** New limits for what follows: the pool grows or shrinks to them as workers come free. */
	reconfigure(options: PoolOptions): void {
		this.#options = options;
		this.#eagerWorkers = eagerWorkersFor(options);
		for (const worker of this.#workers) {
			worker.recheckTimeouts();
		}

		this.#fillToMinimum();
		this.#dispatch();
	}

	/** Workers running, busy and idle; checks waiting. */
	get stats(): {workers: number; busy: number; idle: number; queued: number} {
		return {workers: this.#workers.size, busy: this.#workers.size - this.#idle.length, idle: this.#idle.length, queued: this.#queuedCount};
	}

	/** The process ids of the running workers (for tests and status lines). */
	get workerPids(): number[] {
		return [...this.#workers].map(worker => worker.pid);
	}

	/** Stop every worker: idle ones at once, busy ones after their check, or killed after `graceMs`. */
	async close(graceMs = 1000): Promise<void> {
		this.#closed = true;
		clearTimeout(this.#respawnTimer);
		clearTimeout(this.#growTimer);
		clearImmediate(this.#growCheck);
		for (const job of this.#queue.splice(this.#queueHead)) {
			job.resolve(notRun('shutting down'));
		}

		this.#queue.length = 0;
		this.#queueHead = 0;
		const exits = [...this.#workers].map(async worker => new Promise<void>(resolve => {
			if (worker.exited) {
				resolve();
				return;
			}

			worker.process.once('exit', () => {
				resolve();
			});
			worker.retire();
			setTimeout(() => {
				worker.kill();
			}, graceMs).unref();
		}));
		await Promise.all(exits);
	}

	get #queuedCount(): number {
		return this.#queue.length - this.#queueHead;
	}

	onWorkerFree(worker: Worker): void {
		if (worker.retiring || worker.exited) {
			return;
		}

		if (worker.checks >= this.#options.maxChecksPerWorker || this.#closed) {
			this.#logger.debug({workerPid: worker.pid, checks: worker.checks}, 'replacing a PAM worker after its last check');
			worker.retire();
			this.#workers.delete(worker);
			this.#fillToMinimum();
		} else {
			this.#idle.push(worker);
			if (this.#workers.size > this.#options.minWorkers) {
				worker.startIdleTimer();
			}
		}

		this.#dispatch();
	}

	onIdleTimeout(worker: Worker): void {
		const index = this.#idle.indexOf(worker);
		if (index === -1 || this.#workers.size <= this.#options.minWorkers) {
			return;
		}

		this.#idle.splice(index, 1);
		this.#workers.delete(worker);
		worker.retire();
	}

	onWorkerExit(worker: Worker): void {
		const wasKnown = this.#workers.delete(worker);
		const index = this.#idle.indexOf(worker);
		if (index !== -1) {
			this.#idle.splice(index, 1);
		}

		if (this.#closed) {
			return;
		}

		// A worker that dies before its first check is a broken set-up (missing program, a bad
		// library): wait before starting another, so that a crash loop does not spin a core.
		if (wasKnown && !worker.retiring && worker.checks === 0) {
			this.#rapidExits++;
			clearTimeout(this.#respawnTimer);
			this.#respawnTimer = setTimeout(() => {
				this.#fillToMinimum();
				this.#dispatch();
			}, Math.min(30_000, 100 * 2 ** Math.min(this.#rapidExits, 9)));
			this.#respawnTimer.unref();
			this.#failQueuedWhenNoWorkerCanStart();
			return;
		}

		this.#rapidExits = 0;
		this.#fillToMinimum();
		this.#dispatch();
	}

	#failQueuedWhenNoWorkerCanStart(): void {
		if (this.#workers.size > 0) {
			return;
		}

		for (const job of this.#queue.splice(this.#queueHead)) {
			job.resolve(notRun('no PAM worker could start'));
		}

		this.#queue.length = 0;
		this.#queueHead = 0;
	}

	#fillToMinimum(): void {
		while (!this.#closed && this.#workers.size < this.#options.minWorkers) {
			this.#idle.push(this.#spawn());
		}
	}

	#spawn(): Worker {
		const worker = new Worker(this, this.#logger);
		this.#workers.add(worker);
		return worker;
	}

	/**
	Whether a check that waits may have a new worker: always up to `eagerWorkers` (`true`), beyond
	that one more for each running check that has taken `slowCheckMs` with its worker asleep
	(`'slow'`). Otherwise the time until the question is worth asking again: when the next running
	check turns slow, or when a worker found computing is looked at again.

	A slow check whose worker runs, or waits for a CPU, is not waiting on anything another worker
	could overlap: on a machine whose CPUs were saturated (or stalled by its hypervisor), every check
	in hand turned slow at once, and the pool grew to 29 workers and 134 MiB for checks that
	computed. /proc is read only for a check past `slowCheckMs`, and at most once a quarter of it.
	*/
	#mayGrow(): true | 'slow' | number | undefined {
		const {maxWorkers, slowCheckMs} = this.#options;
		const eagerWorkers = this.eagerWorkers;
		const size = this.#workers.size;
		if (size >= maxWorkers) {
			return undefined;
		}

		if (size < eagerWorkers) {
			return true;
		}

		const now = performance.now();
		let slow = 0;
		let nextSlowInMs = slowCheckMs;
		for (const worker of this.#workers) {
			if (worker.job) {
				const runningMs = now - worker.jobStarted;
				if (runningMs < slowCheckMs) {
					nextSlowInMs = Math.min(nextSlowInMs, slowCheckMs - runningMs);
				} else if (now < worker.computingUntil) {
					nextSlowInMs = Math.min(nextSlowInMs, worker.computingUntil - now);
				} else if (asleep(worker.pid)) {
					slow++;
				} else {
					worker.computingUntil = now + slowCheckMs / 4;
					nextSlowInMs = Math.min(nextSlowInMs, slowCheckMs / 4);
				}
			}
		}

		return size < eagerWorkers + slow ? 'slow' : nextSlowInMs;
	}

	/**
	@param slowSeen A check looked slow one turn of the event loop ago, and still does: grow.
	*/
	#dispatch(slowSeen = false): void {
		while (this.#queuedCount > 0) {
			let worker = this.#idle.pop();
			if (!worker) {
				const grow = this.#mayGrow();
				if (grow === 'slow' && !slowSeen) {
					// Its answer may be in the pipe already, unread behind the events this turn of a
					// busy event loop has yet to handle (a timer fires before them): a check counts
					// as slow once they are read. Without this, a burst on a saturated machine
					// grew the pool to 8 or 13 workers for checks that computed, not waited.
					this.#growCheck ??= setImmediate(() => {
						this.#growCheck = undefined;
						this.#dispatch(true);
					});
					return;
				}

				if (grow !== true && grow !== 'slow') {
					if (grow !== undefined && !this.#growTimer) {
						this.#growTimer = setTimeout(() => {
							this.#growTimer = undefined;
							this.#dispatch();
						}, Math.ceil(grow));
					}

					return;
				}

				worker = this.#spawn();
			}

			const job = this.#queue[this.#queueHead]!;
			this.#queue[this.#queueHead] = undefined as unknown as Job;
			this.#queueHead++;
			if (this.#queueHead > 1024 && this.#queueHead * 2 > this.#queue.length) {
				this.#queue.splice(0, this.#queueHead);
				this.#queueHead = 0;
			}

			worker.run(job);
		}
	}
}

/** The workers the pool starts as soon as checks wait: `eagerWorkers`, or two a CPU when it is 0. */
export function eagerWorkersFor(options: Pick<PoolOptions, 'eagerWorkers'>): number {
	return options.eagerWorkers || 2 * availableParallelism();
}
