/**
 * polkit: CheckAuthorization, YES case, through the polkit prompt backend (or, until it exists,
 * its D-Bus binding alone), one system-bus connection kept open, against `pkcheck` for the same
 * subject — only when a system bus with polkitd answers (at `DBUS_SYSTEM_BUS_ADDRESS`, else the
 * default path) and src/prompt/polkit/ exists; otherwise the row is skipped with the reason.
 *
 * @module
 */

import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { Child, stopAll } from './lib/child.js';
import { ROOT } from './lib/paths.js';
import type { BenchContext, BenchResult } from './lib/shared.js';
import { median, medianRatio, round } from './lib/stats.js';

const DEFAULT_BUS = 'unix:path=/run/dbus/system_bus_socket';
const POLKIT = path.join(ROOT, 'src', 'prompt', 'polkit');
const BINDING = path.join(POLKIT, 'dbus-binding.ts');

function row(fields: Partial<BenchResult>): BenchResult {
  return {
    name: 'polkit',
    ours: null,
    baseline: null,
    ratio: null,
    unit: 'ms per CheckAuthorization (YES)',
    runs: 0,
    target: 'report both; ours well under pkcheck (< 0.5×)',
    checked: 'skipped',
    met: null,
    baselineIs: '`pkcheck --process` for the same subject',
    details: {},
    ...fields,
  };
}

/** Whether polkitd answers on the system bus (a D-Bus Ping to its well-known name). */
function polkitAnswers(address: string): { ok: boolean; why: string } {
  const socket = address.startsWith('unix:path=') ? address.slice('unix:path='.length) : undefined;
  if (socket !== undefined && !existsSync(socket)) {
    return { ok: false, why: `no system bus at ${socket}` };
  }
  const ping = spawnSync(
    'dbus-send',
    [
      '--system',
      '--print-reply',
      '--reply-timeout=2000',
      '--dest=org.freedesktop.PolicyKit1',
      '/org/freedesktop/PolicyKit1/Authority',
      'org.freedesktop.DBus.Peer.Ping',
    ],
    { stdio: 'ignore', timeout: 5_000 },
  );
  if (ping.error) return { ok: false, why: `dbus-send could not run (${ping.error.message})` };
  if (ping.status !== 0) return { ok: false, why: 'polkitd does not answer on the system bus' };
  return { ok: true, why: '' };
}

export async function polkit(context: BenchContext): Promise<BenchResult> {
  const address = process.env.DBUS_SYSTEM_BUS_ADDRESS ?? DEFAULT_BUS;
  let bus = polkitAnswers(address);
  let environment: { teardown(): Promise<void> } | undefined;
  if (!bus.ok && process.getuid?.() === 0 && existsSync('/usr/lib/polkit-1/polkitd')) {
    // As root (CI), start a system bus and polkitd the way the polkit tests do, for this row only.
    try {
      const { setupPolkit } = await import('../test/support/polkit.js');
      environment = await setupPolkit();
      bus = polkitAnswers(address);
      context.log('polkit: started a system bus and polkitd for this benchmark');
    } catch (error) {
      context.log(`polkit: could not start polkitd (${(error as Error).message})`);
    }
  }
  try {
    return await measurePolkit(context, address, bus);
  } finally {
    await environment?.teardown();
  }
}

async function measurePolkit(
  context: BenchContext,
  address: string,
  bus: { ok: boolean; why: string },
): Promise<BenchResult> {
  const binding = existsSync(BINDING);
  if (!bus.ok || !binding) {
    const reasons = [
      ...(bus.ok ? [] : [bus.why]),
      ...(binding ? [] : ['the polkit D-Bus binding (src/prompt/polkit/) does not exist yet']),
    ];
    context.log(`polkit: skipped (${reasons.join('; ')})`);
    return row({ skipped: reasons.join('; ') });
  }
  const rounds = context.quick ? 5 : 20;
  const child = Child.start(
    context.build,
    'polkit-child',
    { directory: POLKIT, address, rounds },
    { label: 'polkit', source: true },
  );
  try {
    const result = await child.next<{
      type: string;
      skip?: string;
      ours: number[];
      binding?: number[];
      baseline: number[];
      actionId: string;
      oursIs: string;
    }>('result', 60_000);
    if (result.skip !== undefined) {
      context.log(`polkit: skipped (${result.skip})`);
      return row({ skipped: result.skip });
    }
    const { ours, baseline, actionId } = result;
    const ratio = medianRatio(ours, baseline);
    return row({
      ours: round(median(ours), 2),
      baseline: round(median(baseline), 2),
      ratio: round(ratio, 2),
      runs: rounds,
      checked: `ratio ${ratio.toFixed(2)}`,
      met: ratio < 0.5,
      details: {
        ours: result.oursIs,
        ...(result.binding ? { checkAuthorizationAloneMs: round(median(result.binding), 2) } : {}),
        actionId,
        subject: 'the benchmark process (root: polkit answers YES)',
      },
      lost: 0,
    });
  } finally {
    await stopAll([child]);
  }
}
