/**
The only importer of `posix`: user and group look-ups and resource limits, which Node lacks.
*/
import posix from 'posix';
import {ConfigError} from './errors.js';

/**
A user name or a numeric uid, as the original daemon's `--owner` takes it.
@throws {ConfigError} When no such user exists.
*/
export function resolveUid(owner: string, option = 'owner'): number {
	if (/^\d+$/.test(owner)) {
		return Number(owner);
	}

	try {
		return posix.getpwnam(owner).uid;
	} catch (error) {
		throw new ConfigError(`The \`${option}\` option names no user on this system: \`${owner}\``, option, {cause: error});
	}
}

/**
A group name or a numeric gid, as the original daemon's `--group` takes it.
@throws {ConfigError} When no such group exists.
*/
export function resolveGid(group: string, option = 'group'): number {
	if (/^\d+$/.test(group)) {
		return Number(group);
	}

	try {
		return posix.getgrnam(group).gid;
	} catch (error) {
		throw new ConfigError(`The \`${option}\` option names no group on this system: \`${group}\``, option, {cause: error});
	}
}

/** The name of a uid, or the number as text when it has none. */
export function userName(uid: number): string {
	try {
		return posix.getpwnam(uid).name;
	} catch {
		return String(uid);
	}
}

/**
Raise the soft open-files limit to the hard one: every connection and every worker pipe is a
file descriptor, and Linux's default soft limit (1024) is below `maxConnections` plus the workers.
@returns The soft limit now in force.
*/
export function raiseOpenFileLimit(): number {
	const {soft, hard} = posix.getrlimit('nofile');
	if (hard !== null && (soft === null || soft < hard)) {
		try {
			posix.setrlimit('nofile', {soft: hard, hard});
			return hard;
		} catch {
			// Not allowed here (a container may forbid it): go on with the limit we have.
		}
	}

	return soft ?? Number.POSITIVE_INFINITY;
}

/** No core dumps: a core of the daemon could hold passwords that were in flight. */
export function disableCoreDumps(): void {
	posix.setrlimit('core', {soft: 0, hard: 0});
}
