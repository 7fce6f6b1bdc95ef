/**
Starts the built daemon (`dist/cli/daemon.js`) as a child process on a pam_wrapper sandbox, reads
its JSON log lines, and talks to it over its socket the way a broker does.
*/
import {spawn, type ChildProcessByStdio} from 'node:child_process';
import {mkdtempSync, rmSync} from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {createInterface} from 'node:readline';
import type {Readable} from 'node:stream';
import {fileURLToPath} from 'node:url';
import {createPamSandbox, type PamSandbox, type PamSandboxOptions} from '../../src/sandbox.js';

export const repositoryRoot = fileURLToPath(new URL('../..', import.meta.url));
export const daemonPath = path.join(repositoryRoot, 'dist/cli/daemon.js');
export const clientCliPath = path.join(repositoryRoot, 'dist/cli/client.js');

export const isRoot = process.getuid?.() === 0;

export type LogLine = Record<string, unknown> & {msg: string; level: string};

export type DaemonOptions = Omit<PamSandboxOptions, 'directory'> & {
	/** Extra command-line flags. */
	readonly args?: readonly string[];
	/** Extra environment. */
	readonly env?: Readonly<Record<string, string>>;
	/** Run on the machine's real PAM (/etc/pam.d), not the pam_wrapper sandbox. */
	readonly realPam?: boolean;
	/** Leave `--services` to the configuration file. */
	readonly servicesFromFile?: boolean;
	/** A command the daemon is run under, such as `['prlimit', '--nofile=300']`. */
	readonly wrapper?: readonly string[];
};

/** Every password sent through `ask()` and `send()`: a daemon's log must hold none of them. */
const passwordsSent = new Set<string>();

export function rememberPassword(password: string): void {
	// Short ones would match ordinary words; the tests use long, distinctive passwords.
	if (password.length >= 6) {
		passwordsSent.add(password);
	}
}

/** One request line, its password remembered for the log check. */
export function requestLine(user: string, password: string, service = 'x2gobroker'): string {
	rememberPassword(password);
	return `${user}\r${password}\r${service}\n`;
}

export class Daemon {
	readonly logs: LogLine[] = [];
	readonly stderr: string[] = [];
	exitCode: number | null | undefined;
	/** Answers received through `send()` and `ask()`: each one has a `request` log line. */
	answered = 0;
	signal: NodeJS.Signals | null | undefined;
	readonly exited: Promise<void>;
	readonly #waiters = new Set<{match: (line: LogLine) => boolean; resolve: (line: LogLine) => void}>();

	private constructor(
		readonly directory: string,
		readonly sandbox: PamSandbox,
		readonly socketPath: string,
		readonly process: ChildProcessByStdio<null, Readable, Readable>,
	) {
		createInterface({input: process.stdout}).on('line', text => {
			let line: LogLine;
			try {
				line = JSON.parse(text) as LogLine;
			} catch {
				line = {msg: text, level: 'unparsed'};
			}

			this.logs.push(line);
			for (const waiter of this.#waiters) {
				if (waiter.match(line)) {
					this.#waiters.delete(waiter);
					waiter.resolve(line);
				}
			}
		});
		createInterface({input: process.stderr}).on('line', text => {
			this.stderr.push(text);
		});
		this.exited = new Promise(resolve => {
			// 'close', not 'exit': the last log lines may still be in the pipe when the process exits.
			process.on('close', (code, signal) => {
				this.exitCode = code;
				this.signal = signal;
				resolve();
			});
		});
	}

	static async start(options: DaemonOptions = {users: []}): Promise<Daemon> {
		const directory = mkdtempSync(path.join(os.tmpdir(), 'pam-authservice-test-'));
		const sandbox = createPamSandbox({directory, users: options.users, ...(options.services ? {services: options.services} : {})});
		const socketPath = path.join(directory, 'run', 'authservice.socket');
		const uid = String(process.getuid?.() ?? 0);
		const gid = String(process.getgid?.() ?? 0);
		const [command, ...prefix] = [...options.wrapper ?? [], process.execPath];
		const child = spawn(command!, [
			...prefix,
			daemonPath,
			'--socket-file', socketPath,
			'--owner', uid,
			'--group', gid,
			'--log-level', 'debug',
			// Never the machine's own configuration file.
			'--config', '/dev/null',
			...options.servicesFromFile ? [] : ['--services', ...Object.keys(options.services ?? {x2gobroker: ''})],
			...options.args ?? [],
		], {
			env: {...process.env, ...options.realPam ? {} : sandbox.environment, ...options.env},
			stdio: ['ignore', 'pipe', 'pipe'],
		});
		const daemon = new Daemon(directory, sandbox, socketPath, child);
		const serving = daemon.waitForLog(line => line.msg === 'serving');
		try {
			await Promise.race([serving, daemon.exited.then(() => {
				throw new Error(`The daemon exited before serving (code ${daemon.exitCode}): ${daemon.stderr.join('\n')}\n${daemon.logs.map(line => JSON.stringify(line)).join('\n')}`);
			})]);
		} catch (error) {
			// Never leave a daemon behind that a test could not use.
			child.kill('SIGKILL');
			rmSync(directory, {recursive: true, force: true});
			throw error;
		}

		return daemon;
	}

	/** Resolves with the first log line, past or future, that matches. */
	async waitForLog(match: (line: LogLine) => boolean, timeoutMs = 10_000): Promise<LogLine> {
		const seen = this.logs.find(match);
		if (seen) {
			return seen;
		}

		return new Promise((resolve, reject) => {
			const waiter = {match, resolve: (line: LogLine) => {
				clearTimeout(timer);
				resolve(line);
			}};
			const timer = setTimeout(() => {
				this.#waiters.delete(waiter);
				reject(new Error(`No log line matched within ${timeoutMs} ms`));
			}, timeoutMs);
			this.#waiters.add(waiter);
		});
	}

	/**
	Wait until the log has a `request` line for every answer received through `send()`: log lines
	are written asynchronously, and may come after the answer.
	*/
	async settled(): Promise<void> {
		await this.waitForLog(() => this.requestLogs.length >= this.answered);
	}

	/** The `request` log lines, in the order they were written. */
	get requestLogs(): LogLine[] {
		return this.logs.filter(line => line.msg === 'request');
	}

	/** One request on a fresh connection, as x2gobroker's own client asks. */
	async ask(user: string, password: string, service = 'x2gobroker'): Promise<string> {
		const [answer] = await this.send(requestLine(user, password, service));
		return answer ?? '';
	}

	/**
	Write `data` (chunks written one after the other) and collect the answer lines until the
	expected count arrives or the server closes.
	*/
	async send(data: string | Buffer | ReadonlyArray<string | Buffer>, options: {expect?: number; timeoutMs?: number} = {}): Promise<string[]> {
		const chunks = (Array.isArray(data) ? data : [data]) as Array<string | Buffer>;
		const expected = options.expect ?? chunks.map(chunk => Buffer.from(chunk)).reduce((count, chunk) => count + chunk.filter(byte => byte === 0x0A).length, 0);
		const socket = await connect(this.socketPath);
		try {
			for (const chunk of chunks) {
				socket.write(chunk);
			}

			const lines = await readLines(socket, expected, options.timeoutMs ?? 10_000);
			this.answered += lines.length;
			return lines;
		} finally {
			socket.destroy();
		}
	}

	async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
		if (this.exitCode === undefined) {
			this.process.kill(signal);
			await this.exited;
		}

		rmSync(this.directory, {recursive: true, force: true});
		assertNoPasswordLogged(this.logs);
	}
}

export function assertNoPasswordLogged(logs: readonly LogLine[]): void {
	const text = logs.map(line => JSON.stringify(line)).join('\n');
	for (const password of passwordsSent) {
		if (text.includes(password) || text.includes(JSON.stringify(password).slice(1, -1))) {
			throw new Error(`A password sent in this test run appears in the daemon's log (length ${password.length})`);
		}
	}
}

export async function connect(socketPath: string): Promise<net.Socket> {
	return new Promise((resolve, reject) => {
		const socket = net.connect(socketPath);
		socket.once('connect', () => {
			socket.off('error', reject);
			resolve(socket);
		});
		socket.once('error', reject);
	});
}

/** Read `count` answer lines, or fewer if the server closes first. */
export async function readLines(socket: net.Socket, count: number, timeoutMs = 10_000): Promise<string[]> {
	return new Promise((resolve, reject) => {
		let text = '';
		const lines = (): string[] => text.split('\n').slice(0, -1);
		const done = (): void => {
			clearTimeout(timer);
			socket.off('data', onData);
			socket.off('close', done);
			resolve(lines());
		};

		const onData = (chunk: Buffer): void => {
			text += chunk.toString('latin1');
			if (lines().length >= count) {
				done();
			}
		};

		const timer = setTimeout(() => {
			socket.off('data', onData);
			reject(new Error(`Got ${lines().length} of ${count} answers within ${timeoutMs} ms: ${JSON.stringify(text)}`));
		}, timeoutMs);
		if (count === 0) {
			done();
			return;
		}

		socket.on('data', onData);
		socket.once('close', done);
	});
}

/** Resolves when the server closes the connection (or after `timeoutMs`, with `false`). */
export async function closedByServer(socket: net.Socket, timeoutMs = 5000): Promise<boolean> {
	if (socket.destroyed || socket.readableEnded) {
		return true;
	}

	return new Promise(resolve => {
		const timer = setTimeout(() => {
			resolve(false);
		}, timeoutMs);
		const onEnd = (): void => {
			clearTimeout(timer);
			resolve(true);
		};

		socket.resume();
		socket.once('end', onEnd);
		socket.once('close', onEnd);
		socket.once('error', () => {});
	});
}

/**
Poll `condition` every `pollMs` until it holds, or fail after `timeoutMs`.
@returns How long it took, in ms (poll finely to measure it).
*/
export async function waitFor(condition: () => boolean | Promise<boolean>, timeoutMs = 10_000, pollMs = 50): Promise<number> {
	const started = Date.now();
	while (!(await condition())) {
		if (Date.now() - started > timeoutMs) {
			throw new Error(`Timed out waiting (${timeoutMs} ms)`);
		}

		// eslint-disable-next-line no-await-in-loop
		await new Promise(resolve => setTimeout(resolve, pollMs));
	}

	return Date.now() - started;
}
