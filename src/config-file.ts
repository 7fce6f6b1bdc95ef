/**
The configuration file, `/etc/pam-authservice/pam-authservice.conf`: INI, as X2Go's own broker
configuration is, parsed with npm's `ini`. Keys are the daemon's long flag names
(`max-line-bytes = 4096`); the `[callers]` section maps a PAM service to who may ask for it.

Every problem is reported, each naming its key and line, not just the first.
*/
import {readFileSync} from 'node:fs';
import {parse} from 'ini';
import {integerOptions, logLevels, parseMode} from './config.js';
import {ConfigError} from './errors.js';

export const defaultConfigPath = '/etc/pam-authservice/pam-authservice.conf';

/** Flag name → the kind of value it takes, for every key a file may set. */
const fileKeys: Readonly<Record<string, 'integer' | 'string' | 'mode' | 'list' | 'level'>> = {
	'socket-file': 'string',
	owner: 'string',
	group: 'string',
	permissions: 'mode',
	services: 'list',
	'log-level': 'level',
	'log-file': 'string',
	'worker-path': 'string',
	...Object.fromEntries(Object.keys(integerOptions).map(name => [kebab(name), 'integer' as const])),
};

export function kebab(name: string): string {
	return name.replaceAll(/[A-Z]/g, letter => `-${letter.toLowerCase()}`);
}

/** What a file sets, by flag name, as the command line would give it. */
export type FileValues = Record<string, string | number | string[]>;

export type ConfigFile = {
	readonly path: string;
	readonly values: FileValues;
	/** `[callers]`: service → entries. */
	readonly callers: Record<string, string[]>;
};

/**
Read and check a configuration file.
@param optional - A missing file is an empty one (the default path), rather than an error.
@throws {ConfigError} With one line per problem: `FILE:LINE: key: what is wrong`.
*/
export function readConfigFile(path: string, optional = false): ConfigFile {
	let text: string;
	try {
		text = readFileSync(path, 'utf8');
	} catch (error) {
		if (optional && (error as NodeJS.ErrnoException).code === 'ENOENT') {
			return {path, values: {}, callers: {}};
		}

		throw new ConfigError(`${path}: cannot read the configuration file: ${(error as Error).message}`, 'config', {cause: error});
	}

	const lines = lineNumbers(text);
	const problems: string[] = [];
	const problem = (section: string, key: string, message: string): void => {
		problems.push(`${path}:${lines.get(`${section}\0${key}`) ?? '?'}: ${key}: ${message}`);
	};

	const parsed = parse(text) as Record<string, unknown>;
	const values: FileValues = {};
	const callers: Record<string, string[]> = {};
	for (const [key, raw] of Object.entries(parsed)) {
		if (key === 'callers' && typeof raw === 'object' && raw !== null) {
			for (const [service, entries] of Object.entries(raw as Record<string, unknown>)) {
				if (typeof entries !== 'string' || entries.trim() === '') {
					problem('callers', service, 'give who may ask, e.g. user:x2gobroker, group:www-data');
					continue;
				}

				callers[service] = entries.split(/[\s,]+/).filter(Boolean);
			}

			continue;
		}

		const kind = fileKeys[key];
		if (kind === undefined || typeof raw === 'object') {
			problem('', key, typeof raw === 'object' ? `unknown section [${key}]` : 'unknown key');
			continue;
		}

		if (typeof raw !== 'string' || raw.trim() === '') {
			problem('', key, 'has no value');
			continue;
		}

		const value = raw.trim();
		switch (kind) {
			case 'integer': {
				if (!/^\d+$/.test(value.replaceAll('_', ''))) {
					problem('', key, `must be a whole number, not \`${value}\``);
				} else {
					values[key] = Number(value.replaceAll('_', ''));
				}

				break;
			}

			case 'mode': {
				try {
					parseMode(value, key);
					values[key] = value;
				} catch (error) {
					problem('', key, (error as Error).message);
				}

				break;
			}

			case 'level': {
				if ((logLevels as readonly string[]).includes(value)) {
					values[key] = value;
				} else {
					problem('', key, `must be one of ${logLevels.join(', ')}, not \`${value}\``);
				}

				break;
			}

			case 'list': {
				values[key] = value.split(/[\s,]+/).filter(Boolean);
				break;
			}

			case 'string': {
				values[key] = value;
				break;
			}
		}
	}

	if (problems.length > 0) {
		throw new ConfigError(problems.join('\n'), 'config');
	}

	return {path, values, callers};
}

/** `section\0key` → line number, for messages; the values themselves come from `ini`. */
function lineNumbers(text: string): Map<string, number> {
	const numbers = new Map<string, number>();
	let section = '';
	for (const [index, line] of text.split('\n').entries()) {
		const header = /^\s*\[([^\]]+)\]/.exec(line);
		if (header) {
			section = header[1]!.trim();
			numbers.set(`\0${section}`, index + 1);
			continue;
		}

		const key = /^\s*([^=;#\s][^=]*?)\s*(=|$)/.exec(line);
		if (key) {
			numbers.set(`${section}\0${key[1]}`, index + 1);
		}
	}

	return numbers;
}

/**
The socket path X2Go's broker is configured with, from `/etc/x2go/broker/defaults.conf`
(`X2GOBROKER_AUTHSERVICE_SOCKET="…"`), if that file sets it.
*/
export function x2goDefaultsSocket(path = '/etc/x2go/broker/defaults.conf'): string | undefined {
	try {
		const match = /^\s*(?:export\s+)?X2GOBROKER_AUTHSERVICE_SOCKET\s*=\s*["']?([^"'\n]+)["']?\s*$/m.exec(readFileSync(path, 'utf8'));
		return match?.[1]?.trim() || undefined;
	} catch {
		return undefined;
	}
}
