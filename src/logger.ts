/**
The only place the shape of a log line is decided: pino, JSON lines, ISO time, no host name (the
journal has it). Callers never hand a password to the logger; the redaction below is a second
line of defence, not the first.
*/
import {pino, type DestinationStream, type Logger} from 'pino';
import type {LogLevel} from './config.js';

export type {Logger} from 'pino';

export type LoggerOptions = {
	/** @default 'info' */
	readonly level?: LogLevel;
	/** Where lines go. @default standard output */
	readonly destination?: DestinationStream;
};

export function createLogger(options: LoggerOptions = {}): Logger {
	return pino(
		{
			name: 'pam-authserviced',
			level: options.level ?? 'info',
			base: {pid: process.pid},
			timestamp: pino.stdTimeFunctions.isoTime,
			redact: {paths: ['password', '*.password', 'secret', '*.secret'], censor: '[redacted]'},
			formatters: {
				level: label => ({level: label}),
			},
		},
		options.destination ?? pino.destination({dest: 1, sync: true}),
	);
}
