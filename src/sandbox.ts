/**
A throw-away PAM stack for the demo and the tests: cwrap's pam_wrapper reads service files from a
folder of ours instead of `/etc/pam.d`, and its `pam_matrix` module checks passwords against a
plain-text passdb. Nothing outside the given folder is touched.

The sandbox is only in force for processes started with `environment` (pam_wrapper is an
`LD_PRELOAD` library): the daemon passes its environment on to its workers.
*/
import {existsSync, mkdirSync, readdirSync, writeFileSync} from 'node:fs';
import path from 'node:path';

export type SandboxUser = {
	readonly user: string;
	readonly password: string;
	/** The one service `pam_matrix`'s account section lets this user into. */
	readonly service: string;
};

export type PamSandboxOptions = {
	/** The folder that receives `pam.d/` and `passdb`; created when missing. */
	readonly directory: string;
	readonly users: readonly SandboxUser[];
	/**
	Service name → PAM service file lines. `${matrix}` stands for `pam_matrix.so passdb=…`, `${lib}`
	for the folder of the system's PAM modules (`pam_deny.so` …).
	@default {x2gobroker: matrixStack}
	*/
	readonly services?: Readonly<Record<string, string>>;
};

export type PamSandbox = {
	readonly serviceDirectory: string;
	readonly passdbPath: string;
	/** Folder of the standard PAM modules (`pam_deny.so`, `pam_exec.so`, …). */
	readonly moduleDirectory: string;
	/** Add to a process's environment to put it on this sandbox. */
	readonly environment: Readonly<Record<string, string>>;
};

/** An auth + account stack that checks the passdb and lets each user into its own service only. */
export const matrixStack = 'auth required ${matrix}\naccount required ${matrix}\n';

/** What Debian's `/etc/pam.d/other` amounts to on a locked-down machine. */
export const denyStack = 'auth required ${lib}/pam_deny.so\naccount required ${lib}/pam_deny.so\n';

/** Where Debian's `libpam-wrapper` and `libpam-modules` are, whatever the architecture. */
export function findPamLibraries(): {wrapper: string; matrix: string; moduleDirectory: string} {
	const candidates = ['/usr/lib64', '/usr/lib', ...safeReaddir('/usr/lib').filter(name => name.endsWith('-linux-gnu')).map(name => path.join('/usr/lib', name))];
	for (const directory of candidates) {
		const wrapper = path.join(directory, 'libpam_wrapper.so');
		const matrix = path.join(directory, 'pam_wrapper', 'pam_matrix.so');
		if (existsSync(wrapper) && existsSync(matrix)) {
			return {wrapper, matrix, moduleDirectory: path.join(directory, 'security')};
		}
	}

	throw new Error('pam_wrapper is not installed: install the Debian package `libpam-wrapper`');
}

/** Write the service files and passdb of a sandbox into `directory`. */
export function createPamSandbox(options: PamSandboxOptions): PamSandbox {
	const libraries = findPamLibraries();
	const serviceDirectory = path.join(options.directory, 'pam.d');
	const passdbPath = path.join(options.directory, 'passdb');
	mkdirSync(serviceDirectory, {recursive: true, mode: 0o700});

	for (const {user, password, service} of options.users) {
		if (/[:\n]/.test(user + password + service)) {
			throw new Error(`A sandbox user cannot contain ':' or a newline: ${user}`);
		}
	}

	writeFileSync(passdbPath, options.users.map(({user, password, service}) => `${user}:${password}:${service}\n`).join(''), {mode: 0o600});

	// Without `other`, libpam complains on every pam_start; and a service with no file must be denied.
	const services = {other: denyStack, ...options.services ?? {x2gobroker: matrixStack}};
	for (const [name, stack] of Object.entries(services)) {
		const text = stack
			.replaceAll('${matrix}', `${libraries.matrix} passdb=${passdbPath}`)
			.replaceAll('${lib}', libraries.moduleDirectory);
		writeFileSync(path.join(serviceDirectory, name), text, {mode: 0o644});
	}

	return {
		serviceDirectory,
		passdbPath,
		moduleDirectory: libraries.moduleDirectory,
		environment: {
			LD_PRELOAD: libraries.wrapper,
			PAM_WRAPPER: '1',
			PAM_WRAPPER_SERVICE_DIR: serviceDirectory,
		},
	};
}

function safeReaddir(directory: string): string[] {
	try {
		return readdirSync(directory);
	} catch {
		return [];
	}
}
