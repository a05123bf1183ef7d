/**
 * Summarizes `.cpuprofile` files written with `--profile`: per profile, the functions with the
 * most self time and the project's functions (src/ in the build's chunks, and the fixtures) with
 * the most inclusive time, so a run points at what bounds a figure without opening DevTools.
 *
 * @module
 */

import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

function label(node: ProfileNode): string {
  const { functionName, url, lineNumber } = node.callFrame;
  const file = url ? `${path.basename(url)}:${lineNumber + 1}` : '';
  return `${functionName || '(anonymous)'} ${file}`.trim();
}

/** Whether a frame is the project's own code: the bundled build (chunks, fixtures) or src/. */
function isProject(node: ProfileNode): boolean {
  const { url } = node.callFrame;
  return url.includes('/bridgekeeper-bench-') || url.includes('/src/') || url.includes('/dist/');
}

/** Summary lines for each profile in `directory`. */
export function summarizeProfiles(directory: string, top = 12): string[] {
  const lines: string[] = [];
  let files: string[];
  try {
    files = readdirSync(directory).filter((file) => file.endsWith('.cpuprofile'));
  } catch {
    return lines;
  }
  for (const file of files.sort()) {
    const profile = JSON.parse(readFileSync(path.join(directory, file), 'utf8')) as Profile;
    const byId = new Map(profile.nodes.map((node) => [node.id, node]));
    const parent = new Map<number, number>();
    for (const node of profile.nodes) {
      for (const child of node.children ?? []) parent.set(child, node.id);
    }
    const self = new Map<string, number>();
    const inclusive = new Map<string, number>();
    let busy = 0;
    for (let index = 0; index < profile.samples.length; index++) {
      const id = profile.samples[index]!;
      const node = byId.get(id)!;
      if (node.callFrame.functionName === '(idle)') continue;
      const micros = profile.timeDeltas[index + 1] ?? 0;
      busy += micros;
      self.set(label(node), (self.get(label(node)) ?? 0) + micros);
      const seen = new Set<string>();
      for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
        const frame = byId.get(at)!;
        if (!isProject(frame)) continue;
        const key = label(frame);
        if (seen.has(key)) continue;
        seen.add(key);
        inclusive.set(key, (inclusive.get(key) ?? 0) + micros);
      }
    }
    const print = (title: string, entries: Map<string, number>): void => {
      lines.push(`  ${title}`);
      for (const [key, micros] of [...entries].sort((a, b) => b[1] - a[1]).slice(0, top)) {
        const ms = (micros / 1000).toFixed(1).padStart(8);
        const share = ((100 * micros) / busy).toFixed(1).padStart(5);
        lines.push(`  ${ms} ms ${share}%  ${key}`);
      }
    };
    lines.push(`${path.join(directory, file)}: ${(busy / 1000).toFixed(0)} ms busy`);
    print('self time:', self);
    print('project functions, inclusive:', inclusive);
  }
  return lines;
}
