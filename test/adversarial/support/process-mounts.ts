/**
 * File systems for the fault tests (root only): a tiny tmpfs that can be filled, and read-only
 * bind mounts. Every mount is recorded so that `unmountAll()` (in afterEach or finally) takes it
 * down even when the test failed half-way.
 */

import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Root, and a kernel and container that let us mount a tmpfs. */
export const canMount: boolean = (() => {
  if (process.platform !== 'linux' || process.getuid?.() !== 0) return false;
  try {
    execFileSync(
      'sh',
      ['-c', 'd=$(mktemp -d) && mount -t tmpfs -o size=4k tmpfs "$d" && umount "$d"; rmdir "$d"'],
      {
        stdio: 'ignore',
      },
    );
    return true;
  } catch {
    return false;
  }
})();

export class Mounts {
  readonly #mounted: string[] = [];

  /** Mounts a tmpfs at `target` (an existing directory) with the given `-o` options. */
  tmpfs(target: string, options: string): void {
    execFileSync('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', target]);
    this.#mounted.push(target);
  }

  /** Bind-mounts `target` onto itself read-only: everything in it stays, nothing can change. */
  readOnly(target: string): void {
    execFileSync('mount', ['--bind', target, target]);
    this.#mounted.push(target);
    execFileSync('mount', ['-o', 'remount,bind,ro', target]);
  }

  /** Changes the options of a mount made here (`rw`, `ro`, …). */
  remount(target: string, options: string): void {
    execFileSync('mount', ['-o', `remount,${options}`, target]);
  }

  /** Unmounts everything mounted here, last first; a busy mount is detached lazily. */
  unmountAll(): void {
    for (const target of this.#mounted.splice(0).reverse()) {
      try {
        execFileSync('umount', [target], { stdio: 'ignore' });
      } catch {
        execFileSync('umount', ['-l', target], { stdio: 'ignore' });
      }
    }
  }
}

/**
 * Uses up every free inode of the file system holding `directory` by creating empty files in
 * it: afterwards nothing can be created there (ENOSPC), not even a socket.
 */
export function exhaustInodes(directory: string): number {
  let created = 0;
  for (;;) {
    try {
      writeFileSync(join(directory, `filler-${created}`), '');
      created += 1;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOSPC') return created;
      throw error;
    }
  }
}

/** Fills the data blocks of the file system holding `directory` (inodes stay free). */
export function fillBlocks(directory: string): void {
  try {
    execFileSync('dd', ['if=/dev/zero', `of=${join(directory, 'filler-blocks')}`, 'bs=4k'], {
      stdio: 'ignore',
    });
  } catch {
    // dd stops with ENOSPC once the file system is full, which is the point.
  }
}
