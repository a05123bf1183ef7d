/**
 * Peer policies against real processes on a real server: clients of another uid, of another
 * egid, launched through a setgid binary (the seed's Linux model), and clients that are not the
 * allowed executable. Clients are raw-protocol scripts (test/fixtures/policies/) copied into a
 * temp dir, so they run as any user without reading the repository.
 *
 * The socket is deliberately left reachable by everyone (directory 0755, socket chmod 0666 after
 * listen): this simulates a misconfigured endpoint, so that what keeps other processes out in
 * these tests is the policy layer, not the file system.
 */

import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createServer, type Server, type ServerEvents, sameUser } from 'bridgekeeper';
import { ScriptedPromptBackend } from 'bridgekeeper/testing';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { allowExecutables, systemExecutableReader } from '../../src/policy/executable.js';
import { requireGroup } from '../../src/policy/group.js';
import type { PeerPolicy } from '../../src/policy/peer-policy.js';
import type { PeerIdentity } from '../../src/transport/transport.js';

const isLinux = process.platform === 'linux';
const isRoot = process.getuid?.() === 0;
const has = (command: string): boolean => {
  try {
    execFileSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
};
const hasSetpriv = has('setpriv');
const hasGroupTools = has('groupadd') && has('groupdel') && has('getent');
const hasPython = has('python3');
const hasUserTools = has('useradd') && has('userdel');
/** Root, and a kernel and container that let a child unshare its mount namespace. */
const canUnshareMounts = ((): boolean => {
  if (!isLinux || !isRoot) return false;
  try {
    execFileSync('unshare', ['-m', '--propagation', 'private', 'true'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
const NOBODY = '65534';

const fixture = (name: string): string =>
  fileURLToPath(new URL(`../fixtures/policies/${name}`, import.meta.url));

interface ClientReport {
  client: string;
  pid: number;
  uid: number;
  egid: number;
  sent: number;
  hello: { protocol?: number; session?: { id: string }; error?: unknown } | null;
  result: { served?: boolean; pid?: number; gid?: number } | null;
  error: unknown;
  closing: { reason: string; code: string; message: string } | null;
  socketError: string | null;
}

type Rejection = ServerEvents['peer-rejected'] & {
  /** Bytes the server had read from that socket when it decided. */
  bytesReadAtRejection: number | undefined;
};

interface RunningServer {
  server: Server;
  /** Peers whose request reached the method handler. */
  served: PeerIdentity[];
  rejections: Rejection[];
  /** Every accepted socket, by the identity it was given. */
  accepted: Map<PeerIdentity, Socket>;
}

let dir: string;
let socketPath: string;
const children: ChildProcess[] = [];
const servers: Server[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'bk-policies-'));
  chmodSync(dir, 0o755);
  socketPath = join(dir, 'agent.sock');
  for (const name of ['client.cjs', 'client.py']) {
    copyFileSync(fixture(name), join(dir, name));
    chmodSync(join(dir, name), 0o644);
  }
});

afterEach(async () => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
  await Promise.all(servers.splice(0).map((server) => server.close()));
  rmSync(dir, { recursive: true, force: true });
});

/**
 * A real server on a real socket, with kernel identities: its listener keeps each accepted
 * net.Socket (by identity), so a test can read `bytesRead` at the moment a peer is rejected.
 */
async function startServer(options: {
  peerPolicies?: PeerPolicy[];
  allowOtherUsers?: boolean;
}): Promise<RunningServer> {
  const { loadLinuxBindings } = await import('../../src/platform/linux/bindings.js');
  const { identifySocketPeer, releasePeer } = await import('../../src/platform/linux/identity.js');
  const { listenUnixSocket } = await import('../../src/transport/unix-socket.js');
  const bindings = await loadLinuxBindings();
  const accepted = new Map<PeerIdentity, Socket>();
  const listener = await listenUnixSocket({
    path: socketPath,
    identify: (socket) => {
      const fd = (socket as unknown as { _handle: { fd: number } })._handle.fd;
      const peer = identifySocketPeer(bindings, fd);
      accepted.set(peer, socket);
      return peer;
    },
    release: (peer) => releasePeer(bindings, peer),
  });
  const server = createServer({
    app: 'bk-policies',
    prompt: new ScriptedPromptBackend(),
    ...options,
  });
  servers.push(server);
  const served: PeerIdentity[] = [];
  server.handle('whoami', (_params, context) => {
    served.push(context.peer!);
    return { served: true, pid: context.peer?.pid, gid: context.peer?.gid };
  });
  const rejections: Rejection[] = [];
  server.on('peer-rejected', (event) => {
    // Emitted synchronously when the verdict is in, before the server closes the connection.
    // That is the moment that counts: the close that follows drains and discards what the client
    // had sent, undecoded — on a Unix socket, closing with unread bytes queued resets the peer
    // (ECONNRESET) and it could lose the closing notice — which raises bytesRead.
    const socket = event.peer ? accepted.get(event.peer) : undefined;
    rejections.push({ ...event, bytesReadAtRejection: socket?.bytesRead });
  });
  await server.listen({ listener });
  // The misconfigured endpoint (see the file comment): anyone may connect.
  chmodSync(socketPath, 0o666);
  return { server, served, rejections, accepted };
}

interface RunningClient {
  /** Resolves once the client's hello and request were handed to the kernel. */
  sent: Promise<void>;
  report: Promise<ClientReport>;
}

/** Runs a client fixture (from the temp dir) under `wrapper` (e.g. setpriv …). */
function runClient(
  interpreter: string,
  script: 'client.cjs' | 'client.py',
  wrapper: string[] = [],
  method = 'whoami',
): RunningClient {
  const argv = [...wrapper, interpreter, join(dir, script), socketPath, method];
  const child = spawn(argv[0]!, argv.slice(1), { cwd: dir, stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  let output = '';
  let markSent: () => void = () => {};
  const sent = new Promise<void>((resolve) => {
    markSent = resolve;
  });
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    output += chunk;
    if (output.includes('"event":"sent"') || output.includes('"event": "sent"')) markSent();
  });
  const report = new Promise<ClientReport>((resolve, reject) => {
    child.once('error', reject);
    // 'close', not 'exit': only then has everything the child wrote been read.
    child.once('close', (code) => {
      const lines = output.split('\n').filter((line) => line.startsWith('{'));
      const last = lines.at(-1);
      if (!last) {
        reject(new Error(`${script} printed no report (exit ${code}): ${output}`));
        return;
      }
      resolve(JSON.parse(last) as ClientReport);
    });
  });
  return { sent, report };
}

const nodeClient = (wrapper: string[] = []): RunningClient =>
  runClient(process.execPath, 'client.cjs', wrapper);

/** Asserts what a rejected client saw and that its request never reached a handler. */
function expectRejected(report: ClientReport, running: RunningServer): void {
  expect(report.closing).toMatchObject({ reason: 'peer-rejected', code: 'ERR_PEER_REJECTED' });
  expect(report.hello).toBeNull();
  expect(report.result).toBeNull();
  expect(running.served).toEqual([]);
}

describe.skipIf(!isLinux)('peer policies against real processes (Linux)', () => {
  it.skipIf(!isRoot || !hasSetpriv)(
    'rejects a client of another uid before reading a byte of it (needs root and setpriv)',
    async () => {
      const running = await startServer({});
      const client = nodeClient([
        'setpriv',
        '--reuid',
        NOBODY,
        '--regid',
        NOBODY,
        '--clear-groups',
      ]);
      const report = await client.report;
      expect(report.uid).toBe(Number(NOBODY));
      expect(report.sent).toBeGreaterThan(0);
      expectRejected(report, running);
      expect(running.rejections).toHaveLength(1);
      const [rejection] = running.rejections;
      expect(rejection).toMatchObject({
        policy: 'same-user',
        code: 'ERR_PEER_REJECTED',
        reason: `peer uid ${NOBODY} is not this user's uid 0`,
        peer: { uid: Number(NOBODY), pid: report.pid, source: 'so_peercred' },
      });
      expect(rejection!.bytesReadAtRejection).toBe(0);
      await expect.poll(() => running.server.connectionCount).toBe(0);
    },
  );

  it.skipIf(!isRoot || !hasSetpriv)(
    'rejects it with 0 bytes read even when its hello was already waiting in the socket (needs root and setpriv)',
    async () => {
      // A first policy that holds the verdict until the client's bytes are in the server's
      // receive queue, so "0 bytes read" cannot be an accident of timing.
      let clientSent: Promise<void> = Promise.resolve();
      const waitForClientBytes: PeerPolicy = {
        name: 'wait-for-client-bytes',
        async check() {
          await clientSent;
          await new Promise((resolve) => setTimeout(resolve, 50));
          return { allowed: true };
        },
      };
      const running = await startServer({
        allowOtherUsers: true,
        peerPolicies: [waitForClientBytes, sameUser()],
      });
      const client = nodeClient([
        'setpriv',
        '--reuid',
        NOBODY,
        '--regid',
        NOBODY,
        '--clear-groups',
      ]);
      clientSent = client.sent;
      const report = await client.report;
      expect(report.sent).toBeGreaterThan(0);
      expectRejected(report, running);
      expect(running.rejections).toMatchObject([
        { policy: 'same-user', reason: expect.stringContaining(`uid ${NOBODY}`) },
      ]);
      expect(running.rejections[0]!.bytesReadAtRejection).toBe(0);
    },
  );

  describe.skipIf(!isRoot || !hasSetpriv || !hasGroupTools)(
    'requireGroup with a real group (needs root, setpriv, groupadd)',
    () => {
      const groupName = `bk-policy-${process.pid}`;
      let gid = 0;

      beforeAll(() => {
        // The first free gid from 4242 on.
        for (gid = 4242; ; gid++) {
          try {
            execFileSync('getent', ['group', String(gid)], { stdio: 'ignore' });
          } catch {
            break;
          }
        }
        execFileSync('groupadd', ['-g', String(gid), groupName]);
      });

      afterAll(() => {
        execFileSync('groupdel', [groupName]);
        expect(readFileSync('/etc/group', 'utf8')).not.toContain(`${groupName}:`);
      });

      it('admits a same-uid client whose egid is the group, and serves it', async () => {
        const running = await startServer({ peerPolicies: [requireGroup(groupName)] });
        const report = await nodeClient(['setpriv', '--regid', String(gid), '--clear-groups'])
          .report;
        expect(report).toMatchObject({ uid: 0, egid: gid, closing: null, error: null });
        expect(report.hello?.protocol).toBe(1);
        expect(report.result).toEqual({ served: true, pid: report.pid, gid });
        expect(running.served).toHaveLength(1);
        expect(running.rejections).toEqual([]);
      });

      it('rejects a same-uid client of another gid before reading a byte of it', async () => {
        const running = await startServer({ peerPolicies: [requireGroup(groupName)] });
        const report = await nodeClient(['setpriv', '--regid', NOBODY, '--clear-groups']).report;
        expect(report).toMatchObject({ uid: 0, egid: Number(NOBODY) });
        expectRejected(report, running);
        expect(running.rejections).toMatchObject([
          {
            policy: `group:${groupName}`,
            code: 'ERR_PEER_REJECTED',
            reason: `peer gid ${NOBODY} is not the gid ${gid} of group "${groupName}"`,
          },
        ]);
        expect(running.rejections[0]!.bytesReadAtRejection).toBe(0);
      });

      it("admits the seed's model: a CLI installed setgid to the group; the same script under plain node is rejected", async () => {
        // A copy of node standing in for the CLI: root:<group>, mode 2755.
        const cli = join(dir, 'bk-cli');
        copyFileSync(process.execPath, cli);
        execFileSync('chown', [`root:${groupName}`, cli]);
        chmodSync(cli, 0o2755);
        const running = await startServer({ peerPolicies: [requireGroup(groupName)] });
        const viaSetgid = await runClient(cli, 'client.cjs').report;
        expect(viaSetgid).toMatchObject({ uid: 0, egid: gid, error: null, closing: null });
        expect(viaSetgid.result).toMatchObject({ served: true, gid });
        const plain = await nodeClient().report;
        expect(plain.egid).toBe(0);
        expect(plain.closing).toMatchObject({ code: 'ERR_PEER_REJECTED' });
        expect(plain.result).toBeNull();
        expect(running.served.map((peer) => peer.pid)).toEqual([viaSetgid.pid]);
        expect(running.rejections).toMatchObject([
          { policy: `group:${groupName}`, peer: { pid: plain.pid, gid: 0 } },
        ]);
      });

      it.skipIf(!hasUserTools)(
        'refuses everyone, the setgid CLI included, once a user has the group as primary group (needs useradd)',
        async () => {
          const cli = join(dir, 'bk-cli');
          copyFileSync(process.execPath, cli);
          execFileSync('chown', [`root:${groupName}`, cli]);
          chmodSync(cli, 0o2755);
          // Control: the setgid CLI is admitted while the group is dedicated.
          const before = await startServer({ peerPolicies: [requireGroup(groupName)] });
          expect((await runClient(cli, 'client.cjs').report).result).toMatchObject({
            served: true,
          });
          await before.server.close();
          servers.splice(servers.indexOf(before.server), 1);

          // A system user (no subordinate id ranges) whose primary group is the CLI's.
          const user = `bk-user-${process.pid}`;
          execFileSync('useradd', [
            '--system',
            '--no-create-home',
            '--no-user-group',
            '--gid',
            String(gid),
            '--home-dir',
            '/nonexistent',
            '--shell',
            '/usr/sbin/nologin',
            user,
          ]);
          try {
            const running = await startServer({ peerPolicies: [requireGroup(groupName)] });
            const viaSetgid = await runClient(cli, 'client.cjs').report;
            expect(viaSetgid.egid).toBe(gid);
            expectRejected(viaSetgid, running);
            expect(running.rejections).toMatchObject([
              {
                policy: `group:${groupName}`,
                reason: expect.stringMatching(
                  new RegExp(
                    `^gid ${gid} of group "${groupName}" is the primary group of user "${user}" \\(line \\d+\\) in /etc/passwd`,
                  ),
                ),
              },
            ]);
          } finally {
            execFileSync('userdel', [user]);
          }
          expect(readFileSync('/etc/passwd', 'utf8')).not.toContain(`${user}:`);
        },
      );

      it('fails closed for a group that does not exist: nobody is admitted', async () => {
        const running = await startServer({
          peerPolicies: [requireGroup(`${groupName}-missing`)],
        });
        const report = await nodeClient(['setpriv', '--regid', String(gid), '--clear-groups'])
          .report;
        expectRejected(report, running);
        expect(running.rejections[0]!.reason).toContain(`"${groupName}-missing" does not exist`);
      });
    },
  );

  it('allowExecutables([process.execPath]) admits a node client', async () => {
    const running = await startServer({ peerPolicies: [allowExecutables([process.execPath])] });
    const report = await nodeClient().report;
    expect(report.result).toEqual({ served: true, pid: report.pid, gid: report.egid });
    expect(running.rejections).toEqual([]);
  });

  it.skipIf(!canUnshareMounts)(
    "allowExecutables([process.execPath]) rejects a node copy bind-mounted over process.execPath in the client's own mount namespace (needs root and unshare)",
    async () => {
      // The reviewer's bypass: the kernel reports the path as the client's namespace sees it.
      const impostor = join(dir, 'impostor-node');
      copyFileSync(process.execPath, impostor);
      chmodSync(impostor, 0o755);
      const running = await startServer({ peerPolicies: [allowExecutables([process.execPath])] });
      const disguised = await runClient(process.execPath, 'client.cjs', [
        'unshare',
        '-m',
        '--propagation',
        'private',
        'sh',
        '-c',
        `mount --bind '${impostor}' "$0" && exec "$0" "$@"`,
      ]).report;
      expectRejected(disguised, running);
      expect(running.rejections).toHaveLength(1);
      const [rejection] = running.rejections;
      expect(rejection!.peer?.executable).toBe(process.execPath);
      expect(rejection!.reason).toMatch(
        new RegExp(
          `^the peer runs a file named ${process.execPath} that is not the file at that path`,
        ),
      );
      // The genuine node, to the same server, is served.
      const genuine = await nodeClient().report;
      expect(genuine.result).toMatchObject({ served: true, pid: genuine.pid });
      expect(running.rejections).toHaveLength(1);
    },
  );

  it.skipIf(!hasPython)(
    'allowExecutables([process.execPath]) rejects a python3 client speaking the raw protocol, which is served without it (needs python3)',
    async () => {
      // Control: the python client speaks the protocol well enough to be served.
      const open = await startServer({});
      const served = await runClient('python3', 'client.py').report;
      expect(served.result).toMatchObject({ served: true, pid: served.pid });
      await open.server.close();
      servers.splice(servers.indexOf(open.server), 1);

      const running = await startServer({ peerPolicies: [allowExecutables([process.execPath])] });
      const report = await runClient('python3', 'client.py').report;
      expectRejected(report, running);
      expect(running.rejections).toHaveLength(1);
      const [rejection] = running.rejections;
      expect(rejection!.policy).toBe(`executable:${process.execPath}`);
      expect(rejection!.reason).toMatch(/python[^ ]* is not an allowed executable/);
      expect(rejection!.peer?.executable).toMatch(/python/);
      expect(rejection!.bytesReadAtRejection).toBe(0);
    },
  );

  it('allowExecutables with the sha256 of node hashes it once for several clients, and rejects a wrong pin', async () => {
    const expected = createHash('sha256').update(readFileSync(process.execPath)).digest('hex');
    const reads: number[] = [];
    const reader = {
      ...systemExecutableReader,
      sha256: (pid: number) => {
        reads.push(pid);
        return systemExecutableReader.sha256(pid);
      },
    };
    const running = await startServer({
      peerPolicies: [
        allowExecutables([process.execPath], { sha256: { [process.execPath]: expected }, reader }),
      ],
    });
    const first = await nodeClient().report;
    const second = await nodeClient().report;
    expect(first.result).toMatchObject({ served: true });
    expect(second.result).toMatchObject({ served: true });
    expect(reads).toEqual([first.pid]);
    expect(running.rejections).toEqual([]);
    await running.server.close();
    servers.splice(servers.indexOf(running.server), 1);

    const pinnedWrong = await startServer({
      peerPolicies: [
        allowExecutables([process.execPath], { sha256: { [process.execPath]: '0'.repeat(64) } }),
      ],
    });
    const refused = await nodeClient().report;
    expectRejected(refused, pinnedWrong);
    expect(pinnedWrong.rejections[0]!.reason).toContain(`has sha256 ${expected.slice(0, 16)}`);
  });
});
