/**
What a sysadmin installs: the systemd units (verified, and rated by systemd's own security
analysis), the man pages and the Debian package (its files, its control data, lintian).
*/
import {execFileSync, spawnSync} from 'node:child_process';
import {copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {afterAll, beforeAll, describe, expect, it} from 'vitest';
import {repositoryRoot} from '../helpers/daemon.js';

const units = path.join(repositoryRoot, 'packaging/systemd');
const have = (command: string) => spawnSync('sh', ['-c', `command -v ${command}`]).status === 0;
const version = JSON.parse(readFileSync(path.join(repositoryRoot, 'package.json'), 'utf8')).version as string;
const arch = have('dpkg') ? execFileSync('dpkg', ['--print-architecture'], {encoding: 'utf8'}).trim() : '';
const deb = path.join(repositoryRoot, `build/pam-authservice_${version}_${arch}.deb`);

let scratch: string;

beforeAll(() => {
	scratch = mkdtempSync(path.join(os.tmpdir(), 'pam-authservice-packaging-'));
	if (have('dpkg-deb') && have('help2man')) {
		execFileSync(path.join(repositoryRoot, 'scripts/package-deb'), ['--no-build'], {cwd: repositoryRoot, stdio: 'ignore'});
	}
}, 120_000);

afterAll(() => {
	rmSync(scratch, {recursive: true, force: true});
});

describe.skipIf(!have('systemd-analyze'))('the systemd units', () => {
	it('pass systemd-analyze verify without a word', () => {
		// The unit names the installed binary; here it is the built one, and its man page is ours.
		const service = readFileSync(path.join(units, 'pam-authservice.service'), 'utf8').replace('ExecStart=/usr/sbin/pam-authserviced', `ExecStart=${process.execPath} ${repositoryRoot}/dist/cli/daemon.js`);
		writeFileSync(path.join(scratch, 'pam-authservice.service'), service);
		copyFileSync(path.join(units, 'pam-authservice.socket'), path.join(scratch, 'pam-authservice.socket'));
		mkdirSync(path.join(scratch, 'man/man8'), {recursive: true});
		copyFileSync(path.join(repositoryRoot, 'build/man/pam-authserviced.8.gz'), path.join(scratch, 'man/man8/pam-authserviced.8.gz'));
		const result = spawnSync('systemd-analyze', ['verify', path.join(scratch, 'pam-authservice.socket'), path.join(scratch, 'pam-authservice.service')], {encoding: 'utf8', env: {...process.env, MANPATH: path.join(scratch, 'man')}});
		expect(result.stderr).toBe('');
		expect(result.status).toBe(0);
	});

	it('rate 1.5 or lower in systemd-analyze security (the original: 9.6)', () => {
		const output = execFileSync('systemd-analyze', ['security', '--offline=true', path.join(units, 'pam-authservice.service')], {encoding: 'utf8'});
		const exposure = Number(/Overall exposure level for pam-authservice\.service: ([\d.]+)/.exec(output)?.[1]);
		expect(exposure).toBeLessThanOrEqual(1.5);
	});

	it('run the service with Type=notify from the socket, and restart it on failure', () => {
		const service = readFileSync(path.join(units, 'pam-authservice.service'), 'utf8');
		for (const line of ['Type=notify', 'Restart=on-failure', 'Requires=pam-authservice.socket', 'ExecReload=/bin/kill -HUP $MAINPID', 'WatchdogSec=30s']) {
			expect(service).toContain(`\n${line}\n`);
		}

		const socket = readFileSync(path.join(units, 'pam-authservice.socket'), 'utf8');
		for (const line of ['ListenStream=/run/x2gobroker/x2gobroker-authservice.socket', 'SocketGroup=x2gobroker', 'SocketMode=0660', 'FileDescriptorName=authservice']) {
			expect(socket).toContain(`\n${line}\n`);
		}
	});
});

describe.skipIf(!have('man'))('the man pages', () => {
	it.each(['build/man/pam-authserviced.8.gz', 'build/man/pam-authservice.1.gz'])('%s renders without a warning and documents every option', file => {
		const result = spawnSync('man', ['--warnings', '-l', path.join(repositoryRoot, file)], {encoding: 'utf8', env: {...process.env, MANWIDTH: '80'}});
		expect(result.stderr).toBe('');
		expect(result.stdout).toMatch(/SEE ALSO/);
		if (file.includes('serviced')) {
			for (const option of ['--socket-file', '--max-line-bytes', '--failure-budget-burst', '--check-config', '--daemonize', 'SIGHUP', 'SIGUSR1']) {
				expect(result.stdout.replaceAll('‐\n', '').replaceAll(/\s+/g, ' ')).toContain(option);
			}
		}
	});
});

describe.skipIf(!have('dpkg-deb') || !have('help2man'))('the Debian package', () => {
	it('holds the app, the commands, the units, the configuration and the docs where Debian expects them', () => {
		const files = execFileSync('dpkg-deb', ['-c', deb], {encoding: 'utf8'}).split('\n').map(line => line.split(/\s+/).at(-1)!.replace(/^\./, ''));
		for (const file of [
			'/usr/sbin/pam-authserviced',
			'/usr/bin/pam-authservice',
			'/usr/lib/pam-authservice/dist/cli/daemon.js',
			'/usr/lib/pam-authservice/build/pam-authservice-worker',
			'/usr/lib/pam-authservice/build/pam_authservice_native.node',
			'/usr/lib/pam-authservice/node_modules/pino/package.json',
			'/usr/lib/pam-authservice/node_modules/posix/build/Release/posix.node',
			'/lib/systemd/system/pam-authservice.service',
			'/lib/systemd/system/pam-authservice.socket',
			'/usr/lib/tmpfiles.d/pam-authservice.conf',
			'/usr/lib/sysusers.d/pam-authservice.conf',
			'/etc/pam.d/x2gobroker',
			'/etc/pam-authservice/pam-authservice.conf',
			'/etc/logrotate.d/pam-authservice',
			'/usr/share/man/man8/pam-authserviced.8.gz',
			'/usr/share/man/man1/pam-authservice.1.gz',
			'/usr/share/doc/pam-authservice/copyright',
		]) {
			expect(files, file).toContain(file);
		}

		// Only what runs: no development dependency, no test, no source map.
		expect(files.filter(file => /node_modules\/(vitest|typescript|fast-check)\//.test(file))).toEqual([]);
		expect(files.filter(file => file.endsWith('.map'))).toEqual([]);
	});

	it('declares its configuration files as conffiles, and what it replaces', () => {
		const conffiles = execFileSync('dpkg-deb', ['-I', deb, 'conffiles'], {encoding: 'utf8'}).trim().split('\n');
		expect(conffiles).toEqual(['/etc/logrotate.d/pam-authservice', '/etc/pam-authservice/pam-authservice.conf', '/etc/pam.d/x2gobroker']);
		const field = (name: string) => execFileSync('dpkg-deb', ['-f', deb, name], {encoding: 'utf8'}).trim();
		expect(field('Package')).toBe('pam-authservice');
		expect(field('Version')).toBe(version);
		expect(field('Depends')).toContain('nodejs (>= 20.19)');
		expect(field('Replaces')).toBe('x2gobroker-authservice');
	});

	it.skipIf(!have('lintian'))('has no lintian error', () => {
		const result = spawnSync('lintian', ['--tag-display-limit', '0', deb], {encoding: 'utf8'});
		const errors = result.stdout.split('\n').filter(line => line.startsWith('E:'));
		expect(errors).toEqual([]);
	}, 120_000);
});
