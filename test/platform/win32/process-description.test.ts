import { beforeEach, describe, expect, it } from 'vitest';
import { Win32Error } from '../../../src/platform/win32/bindings.js';
import {
  describeWin32Process,
  knownHostName,
  MAX_WALK_STEPS,
  programName,
  shellName,
} from '../../../src/platform/win32/process-description.js';
import { FakeWin32, IMAGES } from './fake-bindings.js';

let fake: FakeWin32;
let nextPid = 1000;

beforeEach(() => {
  fake = new FakeWin32();
});

/** Spawns a chain, top first, each the parent of the next; returns the pids. */
function chain(...images: (string | undefined)[]): number[] {
  const pids: number[] = [];
  let parent: number | undefined;
  for (const image of images) {
    const pid = nextPid;
    nextPid += 4;
    fake.spawn({ pid, ...(parent === undefined ? {} : { parent }), ...(image ? { image } : {}) });
    pids.push(pid);
    parent = pid;
  }
  return pids;
}

/** Describes the last pid of a chain, anchored on its parent. */
function describeLast(pids: number[]) {
  const pid = pids.at(-1)!;
  const process = fake.processes.get(pid)!;
  return describeWin32Process(
    fake,
    {
      pid,
      startTime: String(process.created),
      ...(process.image === undefined ? {} : { executable: process.image }),
    },
    process.parentPid === undefined ? undefined : { pid: process.parentPid },
  );
}

describe('names', () => {
  it('knows terminals and IDEs by image name, case-insensitively, in any path form', () => {
    expect(knownHostName(IMAGES.terminal)).toBe('Windows Terminal');
    expect(knownHostName('C:\\x\\OPENCONSOLE.EXE')).toBe('Windows Terminal');
    expect(knownHostName(IMAGES.code)).toBe('Visual Studio Code');
    expect(knownHostName('\\Device\\HarddiskVolume3\\Program Files\\Code - Insiders.exe')).toBe(
      'Visual Studio Code - Insiders',
    );
    expect(knownHostName(IMAGES.node)).toBeUndefined();
    expect(knownHostName(undefined)).toBeUndefined();
  });

  it('knows shells', () => {
    expect(shellName(IMAGES.cmd)).toBe('Command Prompt');
    expect(shellName(IMAGES.powershell)).toBe('Windows PowerShell');
    expect(shellName(IMAGES.pwsh)).toBe('PowerShell');
    expect(shellName('C:\\Windows\\System32\\conhost.exe')).toBe('Console Window Host');
    expect(shellName(IMAGES.node)).toBeUndefined();
  });

  it('takes the program name from the image path', () => {
    expect(programName(IMAGES.node)).toBe('node.exe');
    expect(programName('\\\\?\\C:\\a\\b.exe')).toBe('b.exe');
    expect(programName('')).toBeUndefined();
    expect(programName(undefined)).toBeUndefined();
  });
});

describe('describeWin32Process', () => {
  it('finds Windows Terminal above shells and tools', () => {
    const pids = chain(
      IMAGES.explorer,
      IMAGES.terminal,
      IMAGES.pwsh,
      IMAGES.node,
      IMAGES.cmd,
      IMAGES.cli,
    );
    expect(describeLast(pids)).toEqual({
      host: 'Windows Terminal',
      program: 'contoso.exe',
      pid: pids.at(-1),
      executable: IMAGES.cli,
    });
  });

  it('finds Visual Studio Code, the anchor itself included', () => {
    expect(describeLast(chain(IMAGES.code, IMAGES.pwsh, IMAGES.cli)).host).toBe(
      'Visual Studio Code',
    );
    expect(describeLast(chain(IMAGES.code, IMAGES.cli)).host).toBe('Visual Studio Code');
  });

  it('names the topmost shell when the desktop started it', () => {
    expect(describeLast(chain(IMAGES.explorer, IMAGES.cmd, IMAGES.cli)).host).toBe(
      'Command Prompt',
    );
    expect(
      describeLast(chain(IMAGES.explorer, IMAGES.powershell, IMAGES.node, IMAGES.cmd, IMAGES.cli))
        .host,
    ).toBe('Windows PowerShell');
  });

  it('names an unknown terminal above a shell by its FileDescription, else its file name', () => {
    fake.descriptions.set(IMAGES.fancy, 'Fancy Terminal');
    expect(describeLast(chain(IMAGES.explorer, IMAGES.fancy, IMAGES.pwsh, IMAGES.cli)).host).toBe(
      'Fancy Terminal',
    );
    fake = new FakeWin32();
    expect(describeLast(chain(IMAGES.explorer, IMAGES.fancy, IMAGES.pwsh, IMAGES.cli)).host).toBe(
      'fancyterm.exe',
    );
    fake = new FakeWin32();
    fake.descriptions.set(IMAGES.fancy, new Win32Error('GetFileVersionInfoW', 1813));
    expect(describeLast(chain(IMAGES.fancy, IMAGES.pwsh, IMAGES.cli)).host).toBe('fancyterm.exe');
  });

  it('cleans a FileDescription to one bounded line', () => {
    fake.descriptions.set(IMAGES.fancy, `Fancy\n\u202eTerm ${'x'.repeat(200)}`);
    const { host } = describeLast(chain(IMAGES.fancy, IMAGES.pwsh, IMAGES.cli));
    expect(host).not.toMatch(/[\n\u202e]/);
    expect(host.startsWith('Fancy Term')).toBe(true);
    expect([...host].length).toBeLessThanOrEqual(80);
  });

  it('falls back to the first program when there is no shell or host', () => {
    fake.descriptions.set(IMAGES.make, 'GNU make');
    expect(describeLast(chain(IMAGES.explorer, IMAGES.make, IMAGES.cli)).host).toBe('GNU make');
  });

  it('stops at a parent younger than its child (a reused pid)', () => {
    fake.spawn({ pid: 10, image: IMAGES.cmd });
    const terminal = fake.spawn({ pid: 20, image: IMAGES.terminal });
    fake.spawn({ pid: 30, parent: 10, image: IMAGES.cli });
    // pid 10's real parent exited; pid 20 took over as "parent" later than cmd was created.
    fake.processes.get(10)!.parentPid = 20;
    terminal.created = fake.processes.get(30)!.created + 1n;
    expect(describeLast([30]).host).toBe('Command Prompt');
  });

  it('is bounded and never loops', () => {
    const a = fake.spawn({ pid: 10, image: IMAGES.cmd });
    const b = fake.spawn({ pid: 20, parent: 10, image: IMAGES.cmd });
    a.parentPid = 20;
    a.created = b.created;
    fake.spawn({ pid: 30, parent: 20, image: IMAGES.cli });
    expect(describeLast([30]).host).toBe('Command Prompt');

    fake = new FakeWin32();
    const images = Array.from({ length: 3 * MAX_WALK_STEPS }, () => IMAGES.node);
    const pids = chain(IMAGES.terminal, ...images, IMAGES.cli);
    const before = fake.count('openProcess');
    expect(describeLast(pids).host).toBe('node.exe');
    expect(fake.count('openProcess') - before).toBe(MAX_WALK_STEPS);
  });

  it('stops at the system process and at processes it cannot open', () => {
    fake.spawn({ pid: 4, image: IMAGES.terminal });
    fake.spawn({ pid: 10, parent: 4, image: IMAGES.cmd });
    fake.spawn({ pid: 30, parent: 10, image: IMAGES.cli });
    expect(describeLast([30]).host).toBe('Command Prompt');
    fake.failing.set('processCreationTime', new Win32Error('GetProcessTimes', 5));
    expect(describeLast([30]).host).toBe('contoso.exe');
  });

  it('closes every handle it opens', () => {
    describeLast(chain(IMAGES.explorer, IMAGES.terminal, IMAGES.pwsh, IMAGES.cli));
    expect(fake.openHandles()).toBe(0);
  });

  it('without an anchor or readable facts, the host is the program, else the pid', () => {
    fake.spawn({ pid: 30, image: IMAGES.cli });
    expect(describeLast([30])).toEqual({
      host: 'contoso.exe',
      program: 'contoso.exe',
      pid: 30,
      executable: IMAGES.cli,
    });
    fake.spawn({ pid: 40, parent: 999 });
    expect(describeLast([40])).toEqual({ host: 'pid 40', pid: 40 });
  });

  it('uses a known host without walking', () => {
    const pids = chain(IMAGES.terminal, IMAGES.cli);
    const before = fake.count('openProcess');
    const process = fake.processes.get(pids[1]!)!;
    const description = describeWin32Process(
      fake,
      { pid: process.pid, startTime: String(process.created), executable: IMAGES.cli },
      { pid: pids[0]! },
      { knownHost: 'Cached Host' },
    );
    expect(description.host).toBe('Cached Host');
    expect(fake.count('openProcess')).toBe(before);
  });
});
