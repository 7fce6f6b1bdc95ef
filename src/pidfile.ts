/**
`--pidfile`, for the original's Type=forking unit and SysV init script: written atomically (a
temporary file renamed into place), refused when it names a live process, removed at exit only
while it still names us.
*/
import {promises as fs} from 'node:fs';
import path from 'node:path';
import {ListenError} from './errors.js';

export type PidFile = {
	remove(): Promise<void>;
};

function isAlive(pid: number): boolean {
	try {
		process.kill(pid, 0);
		return true;
	} catch (error) {
		// EPERM: it exists, it is just not ours to signal.
		return (error as NodeJS.ErrnoException).code === 'EPERM';
	}
}

/** @throws {ListenError} When the file names another live process. */
export async function acquirePidFile(pidPath: string): Promise<PidFile> {
	const existing = Number.parseInt(await fs.readFile(pidPath, 'utf8').catch(() => ''), 10);
	if (existing > 0 && existing !== process.pid && isAlive(existing)) {
		throw new ListenError(`${pidPath} names process ${existing}, which is running: is another pam-authserviced running?`);
	}

	await fs.mkdir(path.dirname(pidPath), {recursive: true});
	const temporary = `${pidPath}.${process.pid}.tmp`;
	await fs.writeFile(temporary, `${process.pid}\n`, {mode: 0o644});
	await fs.rename(temporary, pidPath);
	return {
		async remove() {
			const current = Number.parseInt(await fs.readFile(pidPath, 'utf8').catch(() => ''), 10);
			if (current === process.pid) {
				await fs.rm(pidPath, {force: true});
			}
		},
	};
}
