import {readFileSync} from 'node:fs';
import {describe, expect, it} from 'vitest';
import {defaultConfig, integerOptions} from '../../src/config.js';

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

describe('the README', () => {
	it.each(Object.entries(integerOptions))('documents the limit %s with its default', (name, option) => {
		const row = readme.split('\n').find(line => line.startsWith(`| \`${name}\` |`));
		expect(row, `no table row for ${name}`).toBeDefined();
		const documented = Number(row!.split('|')[2]!.replaceAll(/\s/g, ''));
		expect(documented).toBe(option.default);
	});

	it('opens with the two commands, and names the test command that CI runs', () => {
		const commands = /```sh\n(.+)\n(.+)\n```/.exec(readme);
		expect(commands?.[1]).toMatch(/^scripts\/setup && npm run demo\b/);
		expect(commands?.[2]).toMatch(/^scripts\/setup && npm test\b/);
		expect(readFileSync(new URL('../../.ci/run', import.meta.url), 'utf8')).toContain('scripts/setup && npm test');
	});

	it('gives the default socket path', () => {
		expect(readme).toContain(defaultConfig().socketPath);
	});
});
