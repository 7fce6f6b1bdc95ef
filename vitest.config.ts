import {defineConfig} from 'vitest/config';

export default defineConfig({
	test: {
		include: ['test/**/*.test.ts'],
		// Integration tests start real daemons and PAM workers; a generous bound, not a speed target.
		testTimeout: 30_000,
		hookTimeout: 30_000,
		pool: 'forks',
	},
});
