/**
The listener and its connections: reading requests, applying the limits, answering in order.
PAM itself is somebody else's (`PamChecker`): a slow check holds only its own answer back.
*/
import net from 'node:net';
import {performance} from 'node:perf_hooks';
import type {Config} from './config.js';
import {listenOnSocket, listenWith, removeSocket, type BoundSocket} from './listen.js';
import type {LoggedCaller, Logger, RequestFields} from './logger.js';
import type {CheckOutcome, PamChecker} from './pool.js';
import type {CheckRequest} from './worker-protocol.js';
import {identifyCaller} from './caller.js';
import {compilePolicy, type Caller} from './policy.js';
import {answers, LineReader, parseRequest} from './protocol.js';
import {LazyTimer} from './lazy-timer.js';
import {RecencyList} from './recency.js';
import {resolveGid, resolveUid} from './system.js';
import {Throttle, type Refusal, type Turn} from './throttle.js';

export type ServerOptions = {
	readonly config: Config;
	readonly logger: Logger;
	readonly pam: PamChecker;
	/** Where each request's line goes: `Logging.request`. @default the same line through `logger.info` */
	readonly logRequest?: (fields: RequestFields) => void;
};

export type ServerStats = {
	readonly connections: number;
	readonly requests: number;
	readonly ok: number;
	readonly fail: number;
};

export type AuthServer = {
	/**
	Start serving: on `fd` when systemd passed a listening socket (never removed at exit), else on
	a socket of our own at `config.socketPath`.
	*/
	listen(fd?: number): Promise<void>;
	/**
	Take a new configuration for what follows: services, policy, limits, throttle. Connections and
	checks in flight go on; the listener stays as it is.
	*/
	reconfigure(config: Config): void;
	/**
	Stop accepting, answer every request already read (within `shutdownTimeoutMs`), close the
	connections, stop the workers and remove the socket.
	*/
	close(): Promise<void>;
	readonly stats: ServerStats;
};

type Slot = {answer: Buffer | undefined};

type Connection = {
	readonly id: number;
	readonly socket: net.Socket;
	readonly caller: Caller;
	/** The caller as every request line of this connection shows it. */
	readonly loggedCaller: LoggedCaller;
	readonly reader: LineReader;
	/** Answers owed, in request order. */
	readonly slots: Slot[];
	/** When it last sent a request or had its last answer written (`performance.now()`). */
	lastActiveAt: number;
	/** No more requests will be read: after an over-long line, at end of input, or at shutdown. */
	closing: boolean;
	/** Inside `pump()`: answers written meanwhile must not start another pump on the stack. */
	pumping: boolean;
	/** Its neighbours in `connections`, by `lastActiveAt`. */
	older: Connection | undefined;
	newer: Connection | undefined;
};

/** How often a repeated warning (evictions, refusals) may be logged. */
const warningIntervalMs = 10_000;

export function createServer({config: initialConfig, logger, pam, logRequest = fields => {
	logger.info(fields, 'request');
}}: ServerOptions): AuthServer {
	let config = initialConfig;
	/** Open connections, the one idle longest first (eviction and the idle time-out take it). */
	const connections = new RecencyList<Connection>();
	const idleTimeout = new LazyTimer(closeIdleConnections);
	const heldFailures = new Map<NodeJS.Timeout, () => void>();
	let allowedServices = new Set(config.services);
	let policy = compilePolicy(config.callers);
	const throttle = new Throttle(config);
	const connectionsPerUid = new Map<number, number>();
	const loggedCallers = new WeakMap<Caller, LoggedCaller>();
	const warned = new Map<string, {at: number; suppressed: number}>();
	const stats = {requests: 0, ok: 0, fail: 0};
	let nextConnectionId = 1;
	let shuttingDown = false;
	let bound: BoundSocket | undefined;
	let allClosed: (() => void) | undefined;

	const server = net.createServer({allowHalfOpen: true, pauseOnConnect: false}, accept);
	// After listen(), an accept() that fails (EMFILE) is reported here; it must never end the daemon.
	server.on('error', error => {
		warnThrottled('accept', {err: error}, 'accepting a connection failed');
	});

	function warnThrottled(key: string, fields: Record<string, unknown>, message: string): void {
		const now = Date.now();
		const last = warned.get(key);
		if (last && now - last.at < warningIntervalMs) {
			last.suppressed++;
			return;
		}

		logger.warn({...fields, suppressed: last?.suppressed ?? 0}, message);
		warned.set(key, {at: now, suppressed: 0});
	}

	function accept(socket: net.Socket): void {
		if (shuttingDown) {
			socket.destroy();
			return;
		}

		const caller = identifyCaller(socket);
		const ofCaller = connectionsPerUid.get(caller.uid) ?? 0;
		if (ofCaller >= config.maxConnectionsPerUid) {
			warnThrottled(`uid ${caller.uid}`, {caller: describeCaller(caller), maxConnectionsPerUid: config.maxConnectionsPerUid}, 'connection limit of this caller reached: refusing a new one');
			socket.destroy();
			return;
		}

		if (connections.size >= config.maxConnections && !evictIdlest()) {
			warnThrottled('refused', {maxConnections: config.maxConnections}, 'connection limit reached and no connection is idle: refusing a new one');
			socket.destroy();
			return;
		}

		connectionsPerUid.set(caller.uid, ofCaller + 1);
		const id = nextConnectionId++;
		const connection: Connection = {
			id,
			socket,
			caller,
			loggedCaller: describeCaller(caller),
			reader: new LineReader(config.maxLineBytes),
			slots: [],
			lastActiveAt: 0,
			closing: false,
			pumping: false,
			older: undefined,
			newer: undefined,
		};
		markActive(connection, performance.now());

		socket.on('data', (chunk: Buffer) => {
			connection.reader.push(chunk);
			pump(connection);
		});
		socket.on('end', () => {
			// The caller has sent all it will: answer what it asked, then close our side.
			pump(connection);
			connection.closing = true;
			connection.reader.clear();
			flush(connection);
		});
		socket.on('drain', () => {
			pump(connection);
		});
		socket.on('error', error => {
			logger.debug({conn: id, err: error}, 'connection error');
		});
		socket.on('close', () => {
			const left = (connectionsPerUid.get(caller.uid) ?? 1) - 1;
			if (left > 0) {
				connectionsPerUid.set(caller.uid, left);
			} else {
				connectionsPerUid.delete(caller.uid);
			}

			connection.reader.clear();
			connections.delete(connection);
			if (connections.size === 0) {
				allClosed?.();
			}
		});
	}

	/** Close the connection that has been idle longest, to make room. */
	function evictIdlest(): boolean {
		for (const connection of connections) {
			if (connection.slots.length === 0) {
				warnThrottled('evicted', {conn: connection.id, maxConnections: config.maxConnections}, 'connection limit reached: closing the longest-idle connection');
				connection.socket.destroy();
				connections.delete(connection);
				return true;
			}
		}

		return false;
	}

	/** A request came, or the last answer went: the connection's idle time starts again. */
	function markActive(connection: Connection, now: number): void {
		connection.lastActiveAt = now;
		connections.touch(connection);
		idleTimeout.arm(config.idleTimeoutMs);
	}

	/**
	Close the connections idle for `idleTimeoutMs`, oldest first, up to the first that is not.
	@returns The ms until that one may be, or `undefined` when none is left open.
	*/
	function closeIdleConnections(): number | undefined {
		const now = performance.now();
		for (const connection of connections) {
			const idleMs = now - connection.lastActiveAt;
			if (idleMs < config.idleTimeoutMs) {
				return config.idleTimeoutMs - idleMs;
			}

			if (connection.slots.length > 0) {
				// Waiting for its answers is not idle: looked at again a time-out from now (the
				// iteration meets it again as the newest, and stops there).
				markActive(connection, now);
				continue;
			}

			logger.debug({conn: connection.id, idleTimeoutMs: config.idleTimeoutMs}, 'closing an idle connection');
			// Its 'close' takes it off the list, later: not iterated again, since the loop goes on.
			connection.socket.destroy();
		}

		return undefined;
	}

	/** Take requests off the connection while it may have more in flight. */
	function pump(connection: Connection): void {
		const {socket, slots, reader} = connection;
		if (connection.pumping) {
			return;
		}

		connection.pumping = true;
		while (!connection.closing && (shuttingDown || slots.length < config.maxRequestsPerConnection) && !socket.writableNeedDrain) {
			const line = reader.next();
			if (line === undefined) {
				break;
			}

			if (line === 'overlong') {
				stats.fail++;
				logRequest({request: ++stats.requests, conn: connection.id, reason: `malformed: line longer than ${config.maxLineBytes} bytes`, caller: connection.loggedCaller, result: 'fail', durationMs: 0});
				slots.push({answer: answers.fail});
				connection.closing = true;
				break;
			}

			handle(connection, line);
		}

		connection.pumping = false;

		const mayRead = !connection.closing && slots.length < config.maxRequestsPerConnection && !socket.writableNeedDrain;
		if (mayRead && socket.isPaused()) {
			socket.resume();
		} else if (!mayRead && !socket.isPaused()) {
			socket.pause();
		}

		flush(connection);
	}

	function handle(connection: Connection, line: Buffer): void {
		const request = ++stats.requests;
		const started = performance.now();
		const slot: Slot = {answer: undefined};
		connection.slots.push(slot);
		markActive(connection, started);

		const parsed = parseRequest(line, config);
		if (parsed.kind === 'malformed') {
			line.fill(0);
			answer(connection, slot, false, {request, reason: `malformed: ${parsed.reason}`, shape: parsed.shape, started});
			return;
		}

		const user = parsed.user.toString('utf8');
		const service = parsed.service.toString('utf8');
		const base = {request, user, service, started};
		if (!allowedServices.has(service)) {
			line.fill(0);
			answer(connection, slot, false, {...base, reason: 'service not allowed'});
			return;
		}

		const refusal = policy.refusal(service, connection.caller);
		if (refusal) {
			line.fill(0);
			answer(connection, slot, false, {...base, reason: `policy: ${refusal}`});
			return;
		}

		// Copies that outlive the line. The password's copy is zeroed once the check is done: the
		// throttle fingerprints a wrong one.
		const check = {
			user: Buffer.from(parsed.user),
			password: Buffer.from(parsed.password),
			service: Buffer.from(parsed.service),
			// PAM modules (pam_listfile, pam_access, audit) see who asked.
			ruser: Buffer.from(connection.caller.userName),
		};
		line.fill(0);
		const entered = throttle.enter(service, user, connection.caller.uid);
		if (entered instanceof Promise) {
			void entered.then(turn => {
				runCheck(connection, slot, check, turn, base);
			});
		} else {
			runCheck(connection, slot, check, entered, base);
		}
	}

	type CheckLog = Pick<AnswerLog, 'request' | 'user' | 'service' | 'started'>;

	/** Once the request has its turn (or was refused one): the check, the throttle's verdict, the answer. */
	function runCheck(connection: Connection, slot: Slot, check: CheckRequest, turn: Turn | Refusal, log: CheckLog): void {
		if ('refused' in turn) {
			check.password.fill(0);
			answer(connection, slot, false, {...log, reason: `throttle: ${turn.refused}`});
			return;
		}

		// A caller that has gone away while waiting its turn gets no check: it cannot read the answer.
		if (connection.socket.destroyed) {
			check.password.fill(0);
			turn.cancel();
			answer(connection, slot, false, {...log, reason: 'caller went away before its turn'});
			return;
		}

		void pam.check(check).then(outcome => {
			const penaltyMs = turn.finish(outcome.ok, check.password);
			check.password.fill(0);
			const delayMs = outcome.ok ? 0 : Math.max(penaltyMs, Math.min(Math.ceil(outcome.delayUs / 1000), config.maxFailDelayMs));
			const fields = {...log, outcome, reason: outcome.reason};
			if (delayMs === 0 || shuttingDown) {
				answer(connection, slot, outcome.ok, fields);
				return;
			}

			// Brute force stays slow, but no worker sleeps: the answer waits on a timer.
			const release = (): void => {
				heldFailures.delete(timer);
				clearTimeout(timer);
				answer(connection, slot, false, {...fields, delayMs});
			};

			const timer = setTimeout(release, delayMs);
			heldFailures.set(timer, release);
		});
	}

	type AnswerLog = {
		readonly request: number;
		readonly reason: string;
		readonly started: number;
		readonly user?: string;
		readonly service?: string;
		readonly shape?: string;
		readonly delayMs?: number;
		readonly outcome?: CheckOutcome;
	};

	function answer(connection: Connection, slot: Slot, ok: boolean, log: AnswerLog): void {
		slot.answer = ok ? answers.ok : answers.fail;
		stats[ok ? 'ok' : 'fail']++;
		const {outcome} = log;
		logRequest({
			request: log.request,
			conn: connection.id,
			user: log.user,
			service: log.service,
			reason: log.reason,
			shape: log.shape,
			caller: connection.loggedCaller,
			result: ok ? 'ok' : 'fail',
			durationMs: Math.round((performance.now() - log.started) * 1000) / 1000,
			delayMs: log.delayMs,
			workerPid: outcome?.workerPid,
		});
		if (outcome && outcome.messages.length > 0) {
			logger.debug({request: log.request, pamMessages: outcome.messages}, 'PAM messages');
		}

		flush(connection);
	}

	/** Write the answers that are ready, in request order, in one write. */
	function flush(connection: Connection): void {
		const {socket, slots} = connection;
		const ready: Buffer[] = [];
		while (slots.length > 0 && slots[0]!.answer) {
			ready.push(slots.shift()!.answer!);
		}

		const written = ready.length > 0;
		if (written && socket.writable) {
			socket.write(ready.length === 1 ? ready[0]! : Buffer.concat(ready));
		}

		if (connection.closing && slots.length === 0) {
			if (socket.readableEnded && socket.writableLength === 0) {
				// The caller has hung up its side and every answer is in its socket: close at once.
				// end() would first shut our side down and wait for that, a round trip for nothing.
				socket.destroy();
			} else {
				socket.end();
			}

			return;
		}

		if (written) {
			if (slots.length === 0) {
				markActive(connection, performance.now());
			}

			if (!connection.closing) {
				pump(connection);
			}
		}
	}

	/** The caller as log lines show it: one object for each `Caller`, so that the logger can keep its part of the line. */
	function describeCaller(caller: Caller): LoggedCaller {
		let logged = loggedCallers.get(caller);
		if (!logged) {
			logged = {pid: caller.pid, uid: caller.uid, user: caller.userName, exe: caller.exe};
			loggedCallers.set(caller, logged);
		}

		return logged;
	}

	return {
		get stats() {
			return {connections: connections.size, ...stats};
		},

		reconfigure(next) {
			config = next;
			allowedServices = new Set(next.services);
			policy = compilePolicy(next.callers);
			throttle.reconfigure(next);
			// A shorter idle time-out falls due before the timer armed for the old one.
			idleTimeout.recheck();
		},

		async listen(fd) {
			if (fd !== undefined) {
				await listenWith(server, {fd});
				return;
			}

			bound = await listenOnSocket(server, {
				socketPath: config.socketPath,
				uid: resolveUid(config.owner),
				gid: resolveGid(config.group),
				mode: config.socketMode,
			});
		},

		async close() {
			shuttingDown = true;
			const closed = new Promise<void>(resolve => {
				server.close(() => {
					resolve();
				});
			});
			for (const release of heldFailures.values()) {
				release();
			}

			for (const connection of [...connections]) {
				// Requests already read are answered; nothing more is read.
				pump(connection);
				connection.closing = true;
				connection.socket.pause();
				connection.reader.clear();
				flush(connection);
			}

			const deadline = setTimeout(() => {
				for (const connection of [...connections]) {
					for (const slot of connection.slots) {
						slot.answer ??= answers.fail;
					}

					flush(connection);
					connection.socket.destroySoon();
				}
			}, config.shutdownTimeoutMs);
			if (connections.size > 0) {
				await new Promise<void>(resolve => {
					allClosed = resolve;
				});
			}

			clearTimeout(deadline);
			idleTimeout.cancel();
			if (bound) {
				await removeSocket(config.socketPath, bound);
			}

			await Promise.all([closed, pam.close()]);
		},
	};
}
