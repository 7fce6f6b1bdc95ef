import {describe, expect, it} from 'vitest';
import {RecencyList} from '../../src/recency.js';

type Item = {readonly name: string; older: Item | undefined; newer: Item | undefined};

const item = (name: string): Item => ({name, older: undefined, newer: undefined});
const names = (list: RecencyList<Item>) => [...list].map(each => each.name);

describe('RecencyList', () => {
	it('keeps items oldest first, a touched one moving to the newest end', () => {
		const list = new RecencyList<Item>();
		const [a, b, c] = [item('a'), item('b'), item('c')];
		for (const each of [a, b, c]) {
			list.touch(each);
		}

		expect(names(list)).toEqual(['a', 'b', 'c']);
		list.touch(a);
		expect(names(list)).toEqual(['b', 'c', 'a']);
		list.touch(c);
		expect(names(list)).toEqual(['b', 'a', 'c']);
		list.touch(c);
		expect(names(list)).toEqual(['b', 'a', 'c']);
		expect(list.size).toBe(3);
		expect([...list][0]).toBe(b);
	});

	it('deletes from either end and the middle, once, and unlinks what it deletes', () => {
		const list = new RecencyList<Item>();
		const items = ['a', 'b', 'c', 'd', 'e'].map(item);
		for (const each of items) {
			list.touch(each);
		}

		const [a, b, c, d, e] = items as [Item, Item, Item, Item, Item];
		expect(list.delete(c)).toBe(true);
		expect(list.delete(c)).toBe(false);
		expect(list.delete(a)).toBe(true);
		expect(list.delete(e)).toBe(true);
		expect(names(list)).toEqual(['b', 'd']);
		expect(list.size).toBe(2);
		for (const gone of [a, c, e]) {
			expect(list.has(gone)).toBe(false);
			expect([gone.older, gone.newer]).toEqual([undefined, undefined]);
		}

		expect(list.has(b) && list.has(d)).toBe(true);
		list.touch(c);
		expect(names(list)).toEqual(['b', 'd', 'c']);
		expect(list.size).toBe(3);
	});

	it('knows a sole item is listed, and is empty again once it is deleted', () => {
		const list = new RecencyList<Item>();
		const only = item('only');
		expect(list.has(only)).toBe(false);
		list.touch(only);
		expect(list.has(only)).toBe(true);
		expect(list.delete(only)).toBe(true);
		expect(list.size).toBe(0);
		expect([...list][0]).toBeUndefined();
		expect(names(list)).toEqual([]);
		list.touch(only);
		expect(names(list)).toEqual(['only']);
	});

	it('lets the item just handed out be deleted while iterating', () => {
		const list = new RecencyList<Item>();
		for (const name of ['a', 'b', 'c', 'd']) {
			list.touch(item(name));
		}

		const seen: string[] = [];
		for (const each of list) {
			seen.push(each.name);
			if (each.name !== 'c') {
				list.delete(each);
			}
		}

		expect(seen).toEqual(['a', 'b', 'c', 'd']);
		expect(names(list)).toEqual(['c']);
		expect(list.size).toBe(1);
	});
});
