#!/usr/bin/env node
/**
`pam-authservice`: ask the daemon from a shell. `check` asks once for a user, with the password
typed on the terminal or given on standard input; `raw` passes standard input to the socket as it
is and prints the answers, as `socat` would.

Passwords are never taken as arguments: every user can read them in the process list.
*/
import net from 'node:net';
import type {Readable, Writable} from 'node:stream';
import yargs from 'yargs';
import {hideBin} from 'yargs/helpers';
import {authenticate, defaultService, defaultTimeoutMs, maxTimeoutMs, validateField} from '../client.js';
import {AuthServiceError, connectErrorFor, errorCodes, InvalidFieldError, TimeoutError, type ErrorCode} from '../errors.js';
import {resolveSocketPath} from '../socket-path.js';
import {isEntryPoint} from './entry-point.js';

const programName = 'pam-authservice';

/** What the process exits with. */
export const exitCodes = {
	/** `check`: the daemon answered `ok`. `raw`: every request sent was answered. */
	ok: 0,
	/** `check`: the daemon answered `fail`. */
	fail: 1,
	/** The command line (or the password given) is wrong; nothing was asked. */
	usage: 2,
	/** The daemon could not be asked, or gave no usable answer. */
	cannotAsk: 3,
	/** Ctrl-C at the password prompt. */
	interrupted: 130,
} as const;

export type ExitCode = (typeof exitCodes)[keyof typeof exitCodes];

/** A terminal, as far as reading a password from it goes. */
export type InputStream = Readable & {
	readonly isTTY?: boolean;
	setRawMode?(mode: boolean): unknown;
};

/** Where the CLI reads and writes; tests pass their own. */
export type CliIo = {
	readonly stdin: InputStream;
	readonly stdout: Writable;
	readonly stderr: Writable;
	/** Read for `$X2GOBROKER_AUTHSERVICE_SOCKET`. */
	readonly env: NodeJS.ProcessEnv;
};

/** The longest password the CLI reads; the daemon takes at most 511 bytes anyway. */
const maxPasswordBytes = 4096;

const lineFeed = 0x0A;
const carriageReturn = 0x0D;
const keys = {
	interrupt: 0x03,
	endOfFile: 0x04,
	backspace: 0x08,
	killLine: 0x15,
	delete: 0x7F,
} as const;

/** What to add after a message about the daemon, by error code. */
const hints: Readonly<Partial<Record<ErrorCode, string>>> = {
	[errorCodes.socketMissing]: 'is pam-authserviced running?',
	[errorCodes.permissionDenied]: 'may this user use the socket? It is usually for its group only',
	[errorCodes.connectionRefused]: 'a stale socket file: is pam-authserviced running?',
};

/** The flags that would put a password in the process list; refused by name so it is not echoed. */
const passwordFlag = /^(?:-p|--?(?:password|passwd|pass|pw)(?:=.*)?)$/i;

class UsageError extends Error {
	override name = 'UsageError' as const;
}

type Command =
	| {readonly kind: 'help'; readonly text: string}
	| {readonly kind: 'check'; readonly user: string; readonly service: string; readonly socketPath: string; readonly timeoutMs: number; readonly passwordStdin: boolean}
	| {readonly kind: 'raw'; readonly socketPath: string; readonly timeoutMs: number};

/**
Run the CLI.
@param argv - The arguments, without `node` and the script.
@returns The exit code, one of `exitCodes`.
*/
export async function main(argv: readonly string[] = hideBin(process.argv), io: CliIo = processIo()): Promise<ExitCode> {
	let command: Command;
	try {
		command = await parseArgs(argv, io.env);
	} catch (error) {
		return usageError(io, error);
	}

	switch (command.kind) {
		case 'help': {
			io.stdout.write(`${command.text}\n`);
			return exitCodes.ok;
		}

		case 'check': {
			return check(command, io);
		}

		case 'raw': {
			return raw(command, io);
		}
	}
}

function processIo(): CliIo {
	return {stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, env: process.env};
}

function usageError(io: CliIo, error: unknown): ExitCode {
	if (!(error instanceof UsageError || error instanceof InvalidFieldError)) {
		throw error;
	}

	io.stderr.write(`${programName}: ${error.message}\nTry '${programName} --help' for the options.\n`);
	return exitCodes.usage;
}

/** One readable line for a daemon that could not be asked. */
function cannotAsk(io: CliIo, error: AuthServiceError): ExitCode {
	const hint = hints[error.code];
	const message = error.message.charAt(0).toLowerCase() + error.message.slice(1);
	io.stderr.write(`${programName}: ${message}${hint === undefined ? '' : ` (${hint})`}\n`);
	return exitCodes.cannotAsk;
}

async function parseArgs(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<Command> {
	const endOfOptions = argv.indexOf('--');
	if ((endOfOptions === -1 ? argv : argv.slice(0, endOfOptions)).some(argument => passwordFlag.test(argument))) {
		throw new UsageError('passwords are never taken as arguments (other users could read them in the process list): give it on standard input with --password-stdin, or run on a terminal to be asked');
	}

	const socketOption = {type: 'string', describe: 'The daemon\'s socket', default: resolveSocketPath(env), defaultDescription: '$X2GOBROKER_AUTHSERVICE_SOCKET or /run/x2gobroker/x2gobroker-authservice.socket'} as const;
	const timeoutOption = {type: 'number', describe: 'Milliseconds to wait for the answers', default: defaultTimeoutMs} as const;
	const parser = yargs()
		.scriptName(programName)
		.usage('$0 <command> [options]\n\nAsk pam-authserviced (or x2gobroker-authservice) whether a password is right.')
		.strict()
		.version(false)
		.help('help')
		.alias('help', 'h')
		.exitProcess(false)
		.parserConfiguration({'duplicate-arguments-array': false})
		.fail((message: string | undefined, error: Error | undefined) => {
			throw new UsageError(redactUnknownArguments(message || (error?.message ?? 'invalid arguments'), argv), {cause: error});
		})
		.command('check', 'Check one user\'s password: prints ok or fail, exits 0 or 1', command => command
			.usage('$0 check --user USER [options]\n\nCheck one user\'s password. It is asked on the terminal, or read from the first line of standard input with --password-stdin.')
			.option('user', {alias: 'u', type: 'string', demandOption: true, describe: 'The user to check'})
			.option('service', {type: 'string', default: defaultService, describe: 'The PAM service to check against'})
			.option('socket', socketOption)
			.option('timeout', timeoutOption)
			.option('password-stdin', {type: 'boolean', default: false, describe: 'Read the password from the first line of standard input'})
			.example(`printf '%s\\n' "$PASSWORD" | $0 check --user alice --password-stdin`, ''))
		.command('raw', 'Send standard input to the socket as it is, print the answers', command => command
			.usage('$0 raw [options]\n\nSend standard input to the socket as it is (requests are `user\\rpassword\\rservice\\n`), print the answers as they come, and exit once every request is answered.')
			.option('socket', socketOption)
			.option('timeout', {...timeoutOption, describe: 'Milliseconds to wait for the remaining answers once standard input ends'})
			.example(`printf 'alice\\rsecret\\rx2gobroker\\n' | $0 raw`, ''))
		.demandCommand(1, 'name a command: check or raw')
		.wrap(null);

	const {args, output} = await new Promise<{args: Record<string, unknown>; output: string}>((resolve, reject) => {
		try {
			void parser.parse([...argv], {}, (error, parsed, text) => {
				if (error) {
					reject(error instanceof UsageError ? error : new UsageError(error.message, {cause: error}));
				} else {
					resolve({args: parsed as Record<string, unknown>, output: text});
				}
			});
		} catch (error) {
			reject(error);
		}
	});

	if (args['help'] === true) {
		return {kind: 'help', text: output};
	}

	const socketPath = String(args['socket']);
	const timeoutMs = args['timeout'];
	if (typeof timeoutMs !== 'number' || !Number.isSafeInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > maxTimeoutMs) {
		throw new UsageError(`the \`--timeout\` option must be a whole number of milliseconds from 1 to ${maxTimeoutMs}`);
	}

	if (socketPath === '') {
		throw new UsageError('the `--socket` option cannot be empty');
	}

	const [name] = args['_'] as unknown[];
	if (name === 'raw') {
		return {kind: 'raw', socketPath, timeoutMs};
	}

	return {kind: 'check', user: String(args['user']), service: String(args['service']), socketPath, timeoutMs, passwordStdin: args['passwordStdin'] === true};
}

/**
yargs names unknown arguments by their value; a stray word might be a password, so only option
names are named.
*/
function redactUnknownArguments(message: string, argv: readonly string[]): string {
	const match = /^Unknown arguments?: (.*)$/.exec(message);
	if (!match) {
		return message.charAt(0).toLowerCase() + message.slice(1);
	}

	const names = (match[1] ?? '').split(', ');
	if (names.includes(argv[0] ?? '')) {
		return 'unknown command: the commands are check and raw';
	}

	const shown = names.map(name => {
		const option = argv.find(argument => argument === `--${name}` || argument === `-${name}` || argument.startsWith(`--${name}=`));
		if (option !== undefined) {
			return `unknown option --${name.replace(/^-+/, '')}`;
		}

		return 'unexpected argument (not shown, in case it is a password)';
	});
	return [...new Set(shown)].join('; ');
}

async function check(command: Extract<Command, {kind: 'check'}>, io: CliIo): Promise<ExitCode> {
	let password: Buffer | undefined;
	try {
		// Before asking for the password, which is then not needed.
		validateField('user', command.user);
		validateField('service', command.service);
		if (command.passwordStdin) {
			password = await readPasswordLine(io.stdin);
		} else if (io.stdin.isTTY === true && typeof io.stdin.setRawMode === 'function') {
			password = await readHiddenPassword(io.stdin, io.stderr);
			if (password === undefined) {
				return exitCodes.interrupted;
			}
		} else {
			throw new UsageError('standard input is not a terminal: give the password on its first line with --password-stdin');
		}

		const ok = await authenticate(command.user, password, command.service, {socketPath: command.socketPath, timeoutMs: command.timeoutMs});
		io.stdout.write(ok ? 'ok\n' : 'fail\n');
		return ok ? exitCodes.ok : exitCodes.fail;
	} catch (error) {
		if (error instanceof AuthServiceError && !(error instanceof InvalidFieldError)) {
			return cannotAsk(io, error);
		}

		return usageError(io, error);
	} finally {
		password?.fill(0);
	}
}

/** Copy `length` bytes of `scratch` into a buffer of their own, and zero `scratch`. */
function takePassword(scratch: Buffer, length: number): Buffer {
	const password = Buffer.allocUnsafeSlow(length);
	scratch.copy(password, 0, 0, length);
	scratch.fill(0);
	return password;
}

/**
The first line of `stdin`, without its `\n` or `\r\n`, or all of it when it has no line feed.
Reading stops after the line; the rest stays unread.
*/
async function readPasswordLine(stdin: Readable): Promise<Buffer> {
	const scratch = Buffer.allocUnsafeSlow(maxPasswordBytes + 1);
	let length = 0;
	return new Promise<Buffer>((resolve, reject) => {
		const stop = (): void => {
			stdin.off('data', onData);
			stdin.off('end', onEnd);
			stdin.off('error', onError);
			stdin.pause();
		};

		const finish = (sawLineFeed: boolean): void => {
			stop();
			if (sawLineFeed && length > 0 && scratch[length - 1] === carriageReturn) {
				length--;
			}

			resolve(takePassword(scratch, length));
		};

		const onData = (chunk: Buffer | string): void => {
			const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
			const end = bytes.indexOf(lineFeed);
			const line = end === -1 ? bytes : bytes.subarray(0, end);
			if (length + line.length > maxPasswordBytes) {
				stop();
				scratch.fill(0);
				bytes.fill(0);
				reject(new UsageError(`the password cannot be longer than ${maxPasswordBytes} bytes`));
				return;
			}

			length += line.copy(scratch, length);
			bytes.fill(0);
			if (end !== -1) {
				finish(true);
			}
		};

		const onEnd = (): void => {
			finish(false);
		};

		const onError = (error: Error): void => {
			stop();
			scratch.fill(0);
			reject(error);
		};

		stdin.on('data', onData);
		stdin.once('end', onEnd);
		stdin.once('error', onError);
		stdin.resume();
	});
}

/**
Ask for the password on the terminal with echo off. Enter ends it; Backspace and Delete remove
the last character, Ctrl-U all of them.
@returns `undefined` when the user pressed Ctrl-C, or Ctrl-D on an empty line.
*/
async function readHiddenPassword(terminal: InputStream, stderr: Writable): Promise<Buffer | undefined> {
	const scratch = Buffer.allocUnsafeSlow(maxPasswordBytes);
	let length = 0;
	stderr.write('Password: ');
	terminal.setRawMode?.(true);
	return new Promise<Buffer | undefined>((resolve, reject) => {
		const stop = (): void => {
			terminal.off('data', onData);
			terminal.off('end', onEnd);
			terminal.off('error', onError);
			terminal.setRawMode?.(false);
			terminal.pause();
			stderr.write('\n');
		};

		const finish = (entered: boolean): void => {
			stop();
			if (entered) {
				resolve(takePassword(scratch, length));
			} else {
				scratch.fill(0);
				resolve(undefined);
			}
		};

		const onData = (chunk: Buffer | string): void => {
			const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
			try {
				for (const byte of bytes) {
					switch (byte) {
						case keys.interrupt: {
							finish(false);
							return;
						}

						case keys.endOfFile: {
							finish(length > 0);
							return;
						}

						case carriageReturn:
						case lineFeed: {
							finish(true);
							return;
						}

						case keys.backspace:
						case keys.delete: {
							// Remove a whole UTF-8 character: its continuation bytes, then its first byte.
							while (length > 0) {
								length--;
								if ((scratch[length]! & 0xC0) !== 0x80) {
									break;
								}
							}

							break;
						}

						case keys.killLine: {
							length = 0;
							break;
						}

						default: {
							if (byte < 0x20) {
								break;
							}

							if (length === maxPasswordBytes) {
								stop();
								scratch.fill(0);
								reject(new UsageError(`the password cannot be longer than ${maxPasswordBytes} bytes`));
								return;
							}

							scratch[length++] = byte;
						}
					}
				}
			} finally {
				bytes.fill(0);
			}
		};

		const onEnd = (): void => {
			finish(length > 0);
		};

		const onError = (error: Error): void => {
			stop();
			scratch.fill(0);
			reject(error);
		};

		terminal.on('data', onData);
		terminal.once('end', onEnd);
		terminal.once('error', onError);
		terminal.resume();
	});
}

function countLineFeeds(bytes: Buffer): number {
	let count = 0;
	for (let index = bytes.indexOf(lineFeed); index !== -1; index = bytes.indexOf(lineFeed, index + 1)) {
		count++;
	}

	return count;
}

async function connect(socketPath: string, timeoutMs: number): Promise<net.Socket> {
	return new Promise((resolve, reject) => {
		const socket = net.createConnection(socketPath);
		const timer = setTimeout(() => {
			socket.destroy();
			reject(new TimeoutError(socketPath, timeoutMs));
		}, timeoutMs);
		const onError = (error: Error): void => {
			clearTimeout(timer);
			reject(connectErrorFor(socketPath, error));
		};

		socket.once('error', onError);
		socket.once('connect', () => {
			clearTimeout(timer);
			socket.off('error', onError);
			resolve(socket);
		});
	});
}

/**
Pass standard input to the socket and the answers to standard output. Once standard input ends,
half-close the socket and wait for as many answers as requests were sent (by counting `\n`): the
daemon may keep its side open, so its closing is not waited for.
*/
async function raw(command: Extract<Command, {kind: 'raw'}>, io: CliIo): Promise<ExitCode> {
	const {socketPath, timeoutMs} = command;
	let socket: net.Socket;
	try {
		socket = await connect(socketPath, timeoutMs);
	} catch (error) {
		if (error instanceof AuthServiceError) {
			return cannotAsk(io, error);
		}

		throw error;
	}

	const {stdin, stdout} = io;
	let sent = 0;
	let answered = 0;
	let inputEnded = false;
	let done = false;
	let timer: NodeJS.Timeout | undefined;
	return new Promise<ExitCode>((resolve, reject) => {
		const unanswered = (): string => `${sent - answered} of ${sent} requests unanswered`;

		const stop = (): void => {
			done = true;
			clearTimeout(timer);
			stdin.off('data', onInput);
			stdin.off('end', onInputEnd);
			stdin.off('error', onInputError);
			stdin.pause();
			socket.destroy();
		};

		/** @param problem - Why not every request was answered. */
		const finish = (problem?: string): void => {
			if (done) {
				return;
			}

			stop();
			if (problem !== undefined) {
				io.stderr.write(`${programName}: ${problem}\n`);
			}

			resolve(problem === undefined ? exitCodes.ok : exitCodes.cannotAsk);
		};

		const finishIfAnswered = (): void => {
			if (inputEnded && answered >= sent) {
				finish();
			}
		};

		const onInput = (chunk: Buffer | string): void => {
			const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
			sent += countLineFeeds(bytes);
			if (!socket.write(bytes, () => bytes.fill(0))) {
				stdin.pause();
				socket.once('drain', () => {
					if (!done) {
						stdin.resume();
					}
				});
			}
		};

		const onInputEnd = (): void => {
			inputEnded = true;
			socket.end();
			timer = setTimeout(() => {
				finish(`no answer from ${socketPath} within ${timeoutMs} ms: ${unanswered()}`);
			}, timeoutMs);
			finishIfAnswered();
		};

		const onInputError = (error: Error): void => {
			stop();
			reject(error);
		};

		socket.on('data', (chunk: Buffer) => {
			answered += countLineFeeds(chunk);
			stdout.write(chunk);
			finishIfAnswered();
		});
		socket.on('error', (error: NodeJS.ErrnoException) => {
			finish(`the connection to ${socketPath} failed (${error.code ?? error.message}): ${unanswered()}`);
		});
		socket.on('close', () => {
			finish(answered >= sent ? undefined : `${socketPath} closed the connection: ${unanswered()}`);
		});
		stdin.on('data', onInput);
		stdin.once('end', onInputEnd);
		stdin.once('error', onInputError);
		stdin.resume();
	});
}

if (isEntryPoint(import.meta.url)) {
	process.exitCode = await main();
}
