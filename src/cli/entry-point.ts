import {realpathSync} from 'node:fs';
import {pathToFileURL} from 'node:url';

/**
Whether the module at `moduleUrl` is the program being run (through a symlink such as
/usr/bin/pam-authservice too), so that tests can import a CLI without running it.
*/
export function isEntryPoint(moduleUrl: string): boolean {
	try {
		return moduleUrl === pathToFileURL(realpathSync(process.argv[1] ?? '')).href;
	} catch {
		return false;
	}
}
