/**
Who may ask for which PAM service. By default, whoever can open the socket (the original's model,
so that existing set-ups keep working); per service, a list of users and groups.
*/
import {ConfigError} from './errors.js';
import {resolveGid, resolveUid} from './system.js';

/** Who is at the other end of a connection, from SO_PEERCRED and /proc. */
export type Caller = {
	readonly pid: number;
	readonly uid: number;
	readonly gid: number;
	/** Supplementary groups, best effort (from /proc at connect time). */
	readonly groups: readonly number[];
	readonly userName: string;
	/** The caller's executable, best effort. */
	readonly exe: string | undefined;
};

type Rule = {readonly kind: 'user' | 'group'; readonly id: number};

export type CallerPolicy = {
	/** @returns `undefined` when allowed, else the rule that refused, for the log. */
	refusal(service: string, caller: Caller): string | undefined;
};

/**
Compile `callers` (service → `user:NAME|UID` and `group:NAME|GID` entries) once, resolving names.
@throws {ConfigError} For an entry of another form or a name that does not exist.
*/
export function compilePolicy(callers: Readonly<Record<string, readonly string[]>>): CallerPolicy {
	const rules = new Map<string, {rules: Rule[]; text: string}>();
	for (const [service, entries] of Object.entries(callers)) {
		const compiled = entries.map(entry => {
			const match = /^(user|group):(.+)$/.exec(entry);
			if (!match) {
				throw new ConfigError(`The \`callers\` option for \`${service}\` has \`${entry}\`: write user:NAME, user:UID, group:NAME or group:GID`, 'callers');
			}

			const kind = match[1] as Rule['kind'];
			return {kind, id: kind === 'user' ? resolveUid(match[2]!, 'callers') : resolveGid(match[2]!, 'callers')};
		});
		rules.set(service, {rules: compiled, text: `callers.${service} = ${entries.join(',')}`});
	}

	return {
		refusal(service, caller) {
			const policy = rules.get(service);
			if (!policy) {
				return undefined;
			}

			const allowed = policy.rules.some(rule => rule.kind === 'user'
				? rule.id === caller.uid
				: rule.id === caller.gid || caller.groups.includes(rule.id));
			return allowed ? undefined : policy.text;
		},
	};
}

/**
Parse `SERVICE=ENTRY[,ENTRY…]` flags into the `callers` option.
@throws {ConfigError}
*/
export function parseCallersFlags(flags: readonly string[]): Record<string, string[]> {
	const callers: Record<string, string[]> = {};
	for (const flag of flags) {
		const match = /^([^=]+)=(.+)$/.exec(flag);
		if (!match) {
			throw new ConfigError(`The \`callers\` option takes SERVICE=user:NAME,group:NAME, not \`${flag}\``, 'callers');
		}

		(callers[match[1]!.trim()] ??= []).push(...match[2]!.split(',').map(entry => entry.trim()).filter(Boolean));
	}

	return callers;
}
