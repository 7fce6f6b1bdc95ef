/**
A real local user checked with a real pam_unix stack, as root: plain, and with the systemd
unit's hardening applied by hand (no capabilities, no new privileges, no network), to show the
hardening does not break it. The user and the PAM service file are removed afterwards.
*/
import {execFileSync, spawnSync} from 'node:child_process';
import {randomBytes} from 'node:crypto';
import {rmSync, writeFileSync} from 'node:fs';
import {afterAll, beforeAll, describe, expect, it} from 'vitest';
import {Daemon, isRoot} from '../helpers/daemon.js';

const user = `pamauth${randomBytes(3).toString('hex')}`;
const password = `unix-Pa55-${randomBytes(6).toString('hex')}`;
const service = `pam-authservice-test-${randomBytes(3).toString('hex')}`;
const serviceFile = `/etc/pam.d/${service}`;

if (!isRoot) {
	console.log('skipping the pam_unix tests: they need root to create a user and read /etc/shadow');
}

const canUnshareNetwork = isRoot && spawnSync('unshare', ['--net', 'true']).status === 0;

describe.skipIf(!isRoot)('pam_unix with a real local user (as root)', () => {
	beforeAll(() => {
		execFileSync('useradd', ['--no-create-home', '--shell', '/usr/sbin/nologin', user]);
		execFileSync('chpasswd', [], {input: `${user}:${password}\n`});
		writeFileSync(serviceFile, 'auth required pam_unix.so\naccount required pam_unix.so\n');
	});

	afterAll(() => {
		spawnSync('userdel', [user]);
		rmSync(serviceFile, {force: true});
	});

	const check = async (wrapper: string[] = []) => {
		const daemon = await Daemon.start({users: [], services: {[service]: ''}, realPam: true, ...(wrapper.length > 0 ? {wrapper} : {})});
		try {
			expect(await daemon.ask(user, password, service)).toBe('ok');
			const started = performance.now();
			expect(await daemon.ask(user, `${password}-wrong`, service)).toBe('fail');
			// pam_unix asks for a 2 s delay after a failure; the daemon keeps it.
			expect(performance.now() - started).toBeGreaterThanOrEqual(1000);
			expect(await daemon.ask(`${user}-none`, password, service)).toBe('fail');
		} finally {
			await daemon.stop();
		}
	};

	it('answers ok for the right password and fail otherwise', async () => {
		await check();
	});

	it('still works with no capabilities and no new privileges, as the unit runs it', async () => {
		await check(['setpriv', '--no-new-privs', '--bounding-set=-all', '--inh-caps=-all', '--ambient-caps=-all']);
	});

	it.skipIf(!canUnshareNetwork)('still works without a network, as PrivateNetwork= runs it', async () => {
		await check(['unshare', '--net', 'setpriv', '--no-new-privs', '--bounding-set=-all', '--inh-caps=-all']);
	});
});
