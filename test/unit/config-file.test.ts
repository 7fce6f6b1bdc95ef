import {mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {afterAll, describe, expect, it} from 'vitest';
import {defaultConfig, integerOptions} from '../../src/config.js';
import {kebab, readConfigFile, x2goDefaultsSocket} from '../../src/config-file.js';

const shipped = new URL('../../etc/pam-authservice.conf', import.meta.url);
const directory = mkdtempSync(path.join(os.tmpdir(), 'pam-authservice-config-'));

afterAll(() => {
	rmSync(directory, {recursive: true, force: true});
});

function write(name: string, text: string): string {
	const file = path.join(directory, name);
	writeFileSync(file, text);
	return file;
}

describe('the shipped configuration file', () => {
	it('sets nothing as shipped: every setting is commented out', () => {
		expect(readConfigFile(shipped.pathname)).toMatchObject({values: {}, callers: {}});
	});

	it('shows every option with its default, and parses to the defaults once uncommented', () => {
		const uncommented = readFileSync(shipped, 'utf8').replaceAll(/^;(?=[a-z][\w-]* = )/gm, '');
		const {values, callers} = readConfigFile(write('uncommented.conf', uncommented));
		const defaults = defaultConfig();
		for (const [name, option] of Object.entries(integerOptions)) {
			expect(values[kebab(name)], name).toBe(option.default);
		}

		expect(values['socket-file']).toBe(defaults.socketPath);
		expect(values['services']).toEqual(defaults.services);
		expect(values['permissions']).toBe('0o660');
		expect(callers).toEqual({x2gobroker: ['user:x2gobroker', 'group:x2gobroker']});
	});
});

describe('readConfigFile', () => {
	it('reports every problem with its file, line and key', () => {
		const file = write('bad.conf', 'max-workers = 4\nmax-line-bytes = big\n[limits]\nfoo = 1\n[callers]\nx2gobroker =\n');
		expect(() => readConfigFile(file)).toThrow([
			`${file}:2: max-line-bytes: must be a whole number, not \`big\``,
			`${file}:3: limits: unknown section [limits]`,
			`${file}:6: x2gobroker: give who may ask, e.g. user:x2gobroker, group:www-data`,
		].join('\n'));
	});

	it('takes a missing file as empty only when asked to', () => {
		expect(readConfigFile(path.join(directory, 'absent.conf'), true).values).toEqual({});
		expect(() => readConfigFile(path.join(directory, 'absent.conf'))).toThrow('cannot read the configuration file');
	});
});

describe('x2goDefaultsSocket', () => {
	it('reads the socket X2Go\'s broker is configured with', () => {
		const file = write('defaults.conf', '# X2Go broker defaults\nX2GOBROKER_DEBUG=0\nX2GOBROKER_AUTHSERVICE_SOCKET="/run/x2go/auth.socket"\n');
		expect(x2goDefaultsSocket(file)).toBe('/run/x2go/auth.socket');
		expect(x2goDefaultsSocket(path.join(directory, 'absent'))).toBeUndefined();
	});
});
