/**
What a sysadmin installs: the systemd units (verified, and rated by systemd's own security
analysis), the man pages, the Debian package (its files, its control data, lintian), and, where
this machine can boot itself in a container, the package installed and run by a real systemd.
*/
import {execFileSync, spawnSync} from 'node:child_process';
import {chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {afterAll, beforeAll, describe, expect, it} from 'vitest';
import {isRoot, repositoryRoot} from '../helpers/daemon.js';

const units = path.join(repositoryRoot, 'packaging/systemd');
const have = (command: string) => spawnSync('sh', ['-c', `command -v ${command}`]).status === 0;
const version = JSON.parse(readFileSync(path.join(repositoryRoot, 'package.json'), 'utf8')).version as string;
const arch = have('dpkg') ? execFileSync('dpkg', ['--print-architecture'], {encoding: 'utf8'}).trim() : '';
const deb = path.join(repositoryRoot, `build/pam-authservice_${version}_${arch}.deb`);
const nodeMajor = Number(process.versions.node.split('.')[0]);

/** Why a group of tests cannot run here, printed once; undefined when it can. */
function missing(what: string, commands: readonly string[], extra?: string): string | undefined {
	const absent = commands.filter(command => !have(command));
	const reason = absent.length > 0 ? `${absent.join(', ')} not installed` : extra;
	if (reason) {
		console.warn(`packaging.test.ts: skipping ${what}: ${reason}`);
	}

	return reason;
}

const cannotAnalyze = missing('the systemd unit checks', ['systemd-analyze']);
const cannotRenderMan = missing('the man page checks', ['man', 'help2man']);
const cannotPackage = missing('the Debian package checks', ['dpkg-deb', 'help2man']);
const cannotLint = cannotPackage ?? missing('lintian', ['lintian']);
const cannotBoot = cannotPackage ?? missing('the package under a real systemd', ['systemd-nspawn', 'unshare'],
	!isRoot ? 'not root'
		: !existsSync('/lib/systemd/systemd') ? 'this machine has no systemd to boot'
			: !readFileSync('/proc/filesystems', 'utf8').includes('\toverlay\n') ? 'no overlay file system'
				: spawnSync('unshare', ['-m', 'true']).status === 0 ? undefined : 'cannot make a mount namespace');

let scratch: string;

beforeAll(() => {
	scratch = mkdtempSync(path.join(os.tmpdir(), 'pam-authservice-packaging-'));
	if (!cannotPackage || !cannotRenderMan) {
		// Builds the man pages too; --no-build: `npm test` has built the tree.
		execFileSync(path.join(repositoryRoot, 'scripts/package-deb'), ['--no-build'], {cwd: repositoryRoot, stdio: 'pipe'});
	}
}, 120_000);

afterAll(() => {
	rmSync(scratch, {recursive: true, force: true});
});

describe.skipIf(cannotAnalyze)('the systemd units', () => {
	/** The units in a folder of their own, the service naming the built daemon (verify checks that ExecStart= exists). */
	function unitFolder(name: string): string {
		const folder = path.join(scratch, name);
		mkdirSync(path.join(folder, 'man/man8'), {recursive: true});
		const service = readFileSync(path.join(units, 'pam-authservice.service'), 'utf8')
			.replace('ExecStart=/usr/sbin/pam-authserviced', `ExecStart=${process.execPath} ${repositoryRoot}/dist/cli/daemon.js`);
		writeFileSync(path.join(folder, 'pam-authservice.service'), service);
		copyFileSync(path.join(units, 'pam-authservice.socket'), path.join(folder, 'pam-authservice.socket'));
		// Documentation=man:pam-authserviced(8) is checked too.
		copyFileSync(path.join(repositoryRoot, 'build/man/pam-authserviced.8.gz'), path.join(folder, 'man/man8/pam-authserviced.8.gz'));
		return folder;
	}

	function verify(folder: string) {
		return spawnSync('systemd-analyze', ['verify', path.join(folder, 'pam-authservice.socket'), path.join(folder, 'pam-authservice.service')], {
			encoding: 'utf8',
			// The folder first, so that a drop-in beside the service is read as it would be in /etc.
			env: {...process.env, MANPATH: path.join(folder, 'man'), SYSTEMD_UNIT_PATH: `${folder}:`},
		});
	}

	it('pass systemd-analyze verify without a word', () => {
		const result = verify(unitFolder('verify'));
		expect(result.stderr).toBe('');
		expect(result.status).toBe(0);
	});

	it('take every line of the drop-in example without a word', () => {
		const folder = unitFolder('drop-in');
		mkdirSync(path.join(folder, 'pam-authservice.service.d'));
		const example = readFileSync(path.join(units, 'pam-authservice.service.d/network-pam.conf.example'), 'utf8');
		const uncommented = example.replaceAll(/^#([A-Z]\w+=)/gm, '$1');
		expect(uncommented.match(/^[A-Z]\w+=/gm)?.length).toBeGreaterThanOrEqual(8);
		writeFileSync(path.join(folder, 'pam-authservice.service.d/network-pam.conf'), uncommented);
		const result = verify(folder);
		expect(result.stderr).toBe('');
		expect(result.status).toBe(0);
	});

	it('rate 1.5 or lower in systemd-analyze security (the original: 9.6)', () => {
		const output = execFileSync('systemd-analyze', ['security', '--offline=true', path.join(units, 'pam-authservice.service')], {encoding: 'utf8'});
		const exposure = Number(/Overall exposure level for pam-authservice\.service: ([\d.]+)/.exec(output)?.[1]);
		expect(exposure).toBeLessThanOrEqual(1.5);
	});

	it('run the service with Type=notify from the socket, drain on stop and restart on failure', () => {
		const service = readFileSync(path.join(units, 'pam-authservice.service'), 'utf8');
		for (const line of ['Type=notify', 'NotifyAccess=main', 'Restart=on-failure', 'Requires=pam-authservice.socket', 'ExecReload=/bin/kill -HUP $MAINPID', 'WatchdogSec=30s', 'KillMode=mixed', 'CapabilityBoundingSet=']) {
			expect(service).toContain(`\n${line}\n`);
		}

		const socket = readFileSync(path.join(units, 'pam-authservice.socket'), 'utf8');
		for (const line of ['ListenStream=/run/x2gobroker/x2gobroker-authservice.socket', 'SocketUser=root', 'SocketGroup=x2gobroker', 'SocketMode=0660', 'FileDescriptorName=authservice', 'WantedBy=sockets.target']) {
			expect(socket).toContain(`\n${line}\n`);
		}
	});
});

describe.skipIf(cannotRenderMan)('the man pages', () => {
	it.each(['build/man/pam-authserviced.8.gz', 'build/man/pam-authservice.1.gz'])('%s renders without a warning and documents every option', file => {
		const result = spawnSync('man', ['--warnings', '-l', path.join(repositoryRoot, file)], {encoding: 'utf8', env: {...process.env, MANWIDTH: '80'}});
		expect(result.stderr).toBe('');
		const text = result.stdout.replaceAll('‐\n', '').replaceAll(/\s+/g, ' ');
		const expected = file.includes('serviced')
			? ['NAME pam-authserviced', '--socket-file', '--max-line-bytes', '--failure-budget-burst', '--check-config', '--daemonize', 'SIGHUP', 'SIGUSR1', 'EXIT STATUS', 'FILES', 'SECURITY', 'SEE ALSO']
			: ['NAME pam-authservice', 'Options of check', '--password-stdin', 'Options of raw', 'EXIT STATUS', 'SEE ALSO'];
		for (const words of expected) {
			expect(text).toContain(words);
		}
	});
});

describe.skipIf(cannotPackage)('the Debian package', () => {
	it('holds the app, the commands, the units, the configuration and the docs where Debian 12 expects them', () => {
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
			'/usr/lib/pam.d/x2gobroker',
			'/etc/pam-authservice/pam-authservice.conf',
			'/etc/logrotate.d/pam-authservice',
			'/usr/share/man/man8/pam-authserviced.8.gz',
			'/usr/share/man/man1/pam-authservice.1.gz',
			'/usr/share/doc/pam-authservice/copyright',
			'/usr/share/doc/pam-authservice/changelog.gz',
			'/usr/share/doc/pam-authservice/network-pam.conf.example',
		]) {
			expect(files, file).toContain(file);
		}

		// x2gobroker-common owns /etc/pam.d/x2gobroker: shipping it too would make the two uninstallable together.
		expect(files).not.toContain('/etc/pam.d/x2gobroker');
		// Only what runs: no development dependency, no test, no source map, no TypeScript.
		expect(files.filter(file => /node_modules\/(vitest|typescript|fast-check|@types|nan)\//.test(file))).toEqual([]);
		expect(files.filter(file => /\.(map|ts)$|\/tests?\//.test(file))).toEqual([]);
	});

	it('declares its configuration files as conffiles, the Node.js it was built for, and what it replaces', () => {
		const conffiles = execFileSync('dpkg-deb', ['-I', deb, 'conffiles'], {encoding: 'utf8'}).trim().split('\n');
		expect(conffiles).toEqual(['/etc/logrotate.d/pam-authservice', '/etc/pam-authservice/pam-authservice.conf']);
		const field = (name: string) => execFileSync('dpkg-deb', ['-f', deb, name], {encoding: 'utf8'}).trim();
		expect(field('Package')).toBe('pam-authservice');
		expect(field('Version')).toBe(version);
		// posix is a nan addon: it loads only in the Node.js major version it was compiled for.
		expect(field('Depends')).toContain(`nodejs (>= ${nodeMajor === 20 ? '20.19' : `${nodeMajor}.0`}), nodejs (<< ${nodeMajor + 1})`);
		expect(field('Depends')).toContain('libpam0g');
		expect(field('Provides')).toBe('x2gobroker-authservice');
		expect(field('Replaces')).toBe('x2gobroker-authservice');
		expect(field('Conflicts')).toBe('x2gobroker-authservice');
	});

	it('runs the daemon with the Node.js flags and environment of its script\'s first line', () => {
		const shebang = readFileSync(path.join(repositoryRoot, 'dist/cli/daemon.js'), 'utf8').split('\n')[0]!;
		const [, variables, flags] = /^#!\/usr\/bin\/env -S (MALLOC_ARENA_MAX=\d+) node (.+)$/.exec(shebang) ?? [];
		expect(flags).toMatch(/--max-semi-space-size=\d+/);
		const wrapper = readFileSync(path.join(repositoryRoot, 'build/deb/root/usr/sbin/pam-authserviced'), 'utf8');
		expect(wrapper).toBe(`#!/bin/sh\nexport ${variables}\nexec /usr/bin/node ${flags} /usr/lib/pam-authservice/dist/cli/daemon.js "$@"\n`);
		expect(readFileSync(path.join(repositoryRoot, 'build/deb/root/usr/bin/pam-authservice'), 'utf8')).toBe('#!/bin/sh\nexec /usr/bin/node /usr/lib/pam-authservice/dist/cli/client.js "$@"\n');
		expect(readFileSync(path.join(repositoryRoot, 'build/deb/root/usr/lib/pam-authservice/dist/cli/daemon.js'), 'utf8').split('\n')[0]).toBe('#!/usr/bin/node');
	});

	it('names the licence of every dependency it ships, with its text', () => {
		const copyright = readFileSync(path.join(repositoryRoot, 'build/deb/root/usr/share/doc/pam-authservice/copyright'), 'utf8');
		expect(copyright).toMatch(/^Format: https:\/\/www\.debian\.org\/doc\/packaging-manuals\/copyright-format\/1\.0\//);
		expect(copyright).toContain('License: AGPL-3.0-or-later');
		// Debian has no copy of the AGPL in /usr/share/common-licenses: the file carries its text.
		expect(copyright).toMatch(/\nLicense: AGPL-3\.0-or-later\n GNU AFFERO GENERAL PUBLIC LICENSE\n[^]*\n 13\. Remote Network Interaction; Use with the GNU General Public License\.\n/);
		for (const dependency of ['pino', 'yargs', 'ini', 'posix']) {
			expect(copyright).toMatch(new RegExp(`Files: usr/lib/pam-authservice/node_modules/${dependency}/\\*\\nCopyright: .+\\nLicense: (MIT|ISC)\\n .+`));
		}
	});

	it.skipIf(cannotLint)('has no lintian error or warning', () => {
		const result = spawnSync('lintian', ['--tag-display-limit', '0', deb], {encoding: 'utf8'});
		const lines = result.stdout.split('\n');
		expect(lines.filter(line => line.startsWith('E:') || line.startsWith('W:'))).toEqual([]);
	}, 120_000);
});

/**
This machine's own root, booted by systemd-nspawn on a throw-away overlay (a tmpfs, in a mount
namespace of the test's own: nothing reaches the real root or /run), runs `check` below as its
only job. The package is installed with dpkg, its maintainer scripts enable and start the socket,
and a real pam_unix check of a local user goes through the socket-activated, hardened service.
*/
const check = String.raw`#!/bin/bash
exec >/out/log 2>&1
set -x
result() { echo "$1=$2" >> /out/result; }
# The answer printed and the exit code: "ok 0", "fail 1", "3" (could not ask).
ask() { local answer; answer=$(printf '%s\n' "$2" | setpriv --reuid="$1" --regid="$1" --init-groups pam-authservice check --user "$3" --password-stdin); echo "$answer $?"; }
dpkg -i /root/pam-authservice.deb
result enabled "$(systemctl is-enabled pam-authservice.socket)"
result listening "$(systemctl is-active pam-authservice.socket)"
result folder "$(stat -c '%a %U %G' /run/x2gobroker)"
result socket "$(stat -c '%a %U %G' /run/x2gobroker/x2gobroker-authservice.socket)"
useradd -m alice && echo 'alice:correct horse staple' | chpasswd
useradd -r -M -G x2gobroker broker
useradd -r -M outsider
result right "$(ask broker 'correct horse staple' alice)"
result wrong "$(ask broker 'incorrect horse' alice)"
result outsider "$(ask outsider 'correct horse staple' alice)"
chage -E 0 alice; result expired "$(ask broker 'correct horse staple' alice)"; chage -E -1 alice
main=$(systemctl show -p MainPID --value pam-authservice.service)
worker=$(pgrep -P "$main" | head -1)
result capabilities "$(grep CapEff /proc/$main/status | cut -f2) $(grep CapEff /proc/$worker/status | cut -f2)"
result seccomp "$(grep -E '^(Seccomp|NoNewPrivs):' /proc/$main/status | cut -f2 | tr '\n' ' ')"
result policies "$(chrt -p "$main" | sed -n 's/.*scheduling policy: //p') $(chrt -p "$worker" | sed -n 's/.*scheduling policy: //p')"
result status "$(systemctl show -p StatusText --value pam-authservice.service)"
result watchdog "$(systemctl show -p WatchdogUSec --value pam-authservice.service)"
result exposure "$(systemd-analyze security pam-authservice.service | sed -n 's/.*Overall exposure level for pam-authservice.service: \([0-9.]*\).*/\1/p')"
systemctl reload pam-authservice.service
result reloaded "$(systemctl show -p MainPID --value pam-authservice.service) $(systemctl is-active pam-authservice.service)"
result mainpid "$main"
kill -9 "$main"; sleep 2
result restarted "$(systemctl show -p NRestarts --value pam-authservice.service) $(ask broker 'correct horse staple' alice)"
systemctl stop pam-authservice.service
result stopped "$(test -S /run/x2gobroker/x2gobroker-authservice.socket && echo socket kept) $(ask broker 'correct horse staple' alice)"
result leaked "$(journalctl -o cat | grep -c 'horse')"
dpkg --purge pam-authservice
result purged "$(ls -A /run/x2gobroker; ls /lib/systemd/system/pam-authservice.* 2>/dev/null)"
`;

describe.skipIf(cannotBoot)('the package under a real systemd', () => {
	it('installs, listens, and answers a pam_unix check through the hardened, socket-activated service', () => {
		const work = path.join(scratch, 'boot');
		const out = path.join(scratch, 'out');
		mkdirSync(work);
		mkdirSync(out);
		writeFileSync(path.join(out, 'check'), check);
		chmodSync(path.join(out, 'check'), 0o755);
		const boot = String.raw`
set -e
work=$1 out=$2 deb=$3
mount -t tmpfs tmpfs "$work"
mkdir "$work/upper" "$work/work" "$work/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$work/upper,workdir=$work/work" "$work/root"
mount -t tmpfs tmpfs /run
root=$work/root
rm -f "$root/usr/sbin/policy-rc.d"
cat > "$root/etc/systemd/system/pamtest.target" <<EOF
[Unit]
Requires=basic.target pamtest.service
After=basic.target
AllowIsolate=yes
EOF
cat > "$root/etc/systemd/system/pamtest.service" <<EOF
[Unit]
After=basic.target
[Service]
Type=oneshot
ExecStart=/out/check
ExecStopPost=/bin/systemctl --no-block poweroff
EOF
exec systemd-nspawn --quiet --directory="$root" --boot --register=no --keep-unit --link-journal=no \
	--private-network --console=pipe --bind="$out:/out" --bind-ro="$deb:/root/pam-authservice.deb" \
	systemd.unit=pamtest.target
`;
		const run = spawnSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', boot, 'boot', work, out, deb], {encoding: 'utf8', timeout: 150_000, stdio: ['ignore', 'pipe', 'pipe']});
		const log = existsSync(path.join(out, 'log')) ? readFileSync(path.join(out, 'log'), 'utf8') : run.stderr;
		const results = new Map(readFileSync(path.join(out, 'result'), {encoding: 'utf8', flag: 'a+'}).trim().split('\n').filter(Boolean).map(line => {
			const index = line.indexOf('=');
			return [line.slice(0, index), line.slice(index + 1).trim()] as const;
		}));
		const expected = {
			enabled: 'enabled',
			listening: 'active',
			folder: '1770 root x2gobroker',
			socket: '660 root x2gobroker',
			right: 'ok 0',
			wrong: 'fail 1',
			// Not in the socket's group: the kernel refuses the connection, the client says it could not ask.
			outsider: '3',
			// The account section: an expired account is refused even with its password.
			expired: 'fail 1',
			capabilities: '0000000000000000 0000000000000000',
			seccomp: '1 2',
			// The seccomp filter lets the worker take SCHED_BATCH (RestrictRealtime= still forbids realtime).
			policies: 'SCHED_OTHER SCHED_BATCH',
			watchdog: '30s',
			reloaded: `${results.get('mainpid')} active`,
			restarted: '1 ok 0',
			stopped: 'socket kept ok 0',
			leaked: '0',
			// The socket removed with its unit (RemoveOnStop=), the units gone.
			purged: '',
		};
		expect(Object.fromEntries(Object.keys(expected).map(key => [key, results.get(key)])), log).toEqual(expected);
		expect(results.get('status'), log).toMatch(/^serving the socket from systemd: /);
		expect(Number(results.get('exposure')), log).toBeLessThanOrEqual(1.5);
	}, 180_000);
});
