import type { Stat } from './types';

export function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

export function stat(values: number[]): Stat {
  const finite = values.filter((v) => Number.isFinite(v));
  return {
    median: median(finite),
    min: finite.length ? Math.min(...finite) : NaN,
    max: finite.length ? Math.max(...finite) : NaN,
    values,
  };
}

export function mean(values: number[]): number {
  return values.length ? values.reduce((a, b) => a + b, 0) / values.length : NaN;
}

/** [a, b, c] rotated left by n: each round starts with a different variant. */
export function rotate<T>(items: T[], n: number): T[] {
  if (items.length === 0) return items;
  const k = n % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}
