import { describe, expect, it } from 'vitest';
import {
  isValidLaunchdLabel,
  type LaunchdAgentPlistOptions,
  launchdAgentPlist,
  launchdAgentPlistPath,
} from '../../src/transport/launchd.js';

const LABEL = 'com.example.secrets-agent.relay';
const PROGRAM = '/Applications/Example Secrets.app/Contents/MacOS/example-relay';

const invalid = expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' });

describe('launchdAgentPlist', () => {
  it('writes a per-user agent: Program, ProgramArguments with argv[0], MachServices, RunAtLoad, KeepAlive', () => {
    expect(
      launchdAgentPlist({ label: LABEL, program: PROGRAM, programArguments: ['--relay', ''] }),
    ).toBe(
      [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">',
        '<plist version="1.0">',
        '<dict>',
        '\t<key>Label</key>',
        '\t<string>com.example.secrets-agent.relay</string>',
        '\t<key>Program</key>',
        `\t<string>${PROGRAM}</string>`,
        '\t<key>ProgramArguments</key>',
        '\t<array>',
        `\t\t<string>${PROGRAM}</string>`,
        '\t\t<string>--relay</string>',
        '\t\t<string></string>',
        '\t</array>',
        '\t<key>MachServices</key>',
        '\t<dict>',
        '\t\t<key>com.example.secrets-agent.relay</key>',
        '\t\t<true/>',
        '\t</dict>',
        '\t<key>RunAtLoad</key>',
        '\t<true/>',
        '\t<key>KeepAlive</key>',
        '\t<true/>',
        '</dict>',
        '</plist>',
        '',
      ].join('\n'),
    );
  });

  it('writes BundleProgram (relative to the bundle) for SMAppService, and no ProgramArguments unless asked', () => {
    const xml = launchdAgentPlist({
      label: LABEL,
      bundleProgram: 'Contents/MacOS/example-relay',
      runAtLoad: false,
      keepAlive: false,
    });
    expect(xml).toContain(
      '\t<key>BundleProgram</key>\n\t<string>Contents/MacOS/example-relay</string>\n',
    );
    expect(xml).not.toContain('<key>Program</key>');
    expect(xml).not.toContain('ProgramArguments');
    expect(xml).toContain('\t<key>RunAtLoad</key>\n\t<false/>\n');
    expect(xml).toContain('\t<key>KeepAlive</key>\n\t<false/>\n');
  });

  it('lists several mach services, or leaves the key out for []', () => {
    const xml = launchdAgentPlist({
      label: LABEL,
      program: PROGRAM,
      machServices: ['com.example.a', 'com.example.b'],
    });
    expect(xml).toContain(
      [
        '\t<key>MachServices</key>',
        '\t<dict>',
        '\t\t<key>com.example.a</key>',
        '\t\t<true/>',
        '\t\t<key>com.example.b</key>',
        '\t\t<true/>',
        '\t</dict>',
      ].join('\n'),
    );
    expect(xml).not.toContain(`<key>${LABEL}</key>`);
    expect(launchdAgentPlist({ label: LABEL, program: PROGRAM, machServices: [] })).not.toContain(
      'MachServices',
    );
  });

  it('writes AssociatedBundleIdentifiers when given', () => {
    const xml = launchdAgentPlist({
      label: LABEL,
      program: PROGRAM,
      associatedBundleIdentifiers: ['com.example.secrets'],
    });
    expect(xml).toContain(
      '\t<key>AssociatedBundleIdentifiers</key>\n\t<array>\n\t\t<string>com.example.secrets</string>\n\t</array>\n',
    );
  });

  it('escapes &, < and > in paths and arguments', () => {
    const xml = launchdAgentPlist({
      label: LABEL,
      program: '/Applications/Tom & Jerry <Beta>.app/Contents/MacOS/relay',
      programArguments: ['--name=a&b', '</string><string>--evil', '"quoted" \'x\''],
    });
    expect(xml).toContain(
      '<string>/Applications/Tom &amp; Jerry &lt;Beta&gt;.app/Contents/MacOS/relay</string>',
    );
    expect(xml).toContain('<string>--name=a&amp;b</string>');
    expect(xml).toContain('<string>&lt;/string&gt;&lt;string&gt;--evil</string>');
    expect(xml).toContain(`<string>"quoted" 'x'</string>`);
    // Every value stayed one element: no injected tags.
    expect(xml.match(/<string>/g)).toHaveLength(6);
  });

  it.each<[string, Partial<LaunchdAgentPlistOptions> & Record<string, unknown>, RegExp]>([
    ['a label without a dot', { label: 'relay' }, /reverse-DNS/],
    ['a label with a slash', { label: 'com.example/../../x' }, /reverse-DNS/],
    ['a label with an empty part', { label: 'com..example' }, /reverse-DNS/],
    ['a label with spaces', { label: 'com.example.my relay' }, /reverse-DNS/],
    ['an empty label', { label: '' }, /reverse-DNS/],
    ['an Apple label', { label: 'com.apple.relay' }, /reserves/],
    ['a relative program', { program: 'relay' }, /absolute path/],
    ['an empty program', { program: '' }, /absolute path/],
    ['a program with a newline', { program: '/bin/relay\n' }, /absolute path/],
    ['both program and bundleProgram', { bundleProgram: 'Contents/MacOS/relay' }, /exactly one/],
    ['neither program nor bundleProgram', { program: undefined }, /exactly one/],
    ['an argument with a control character', { programArguments: ['a\u0000b'] }, /control/],
    ['arguments that are not an array', { programArguments: '--x' as never }, /array/],
    ['an invalid mach service', { machServices: ['bad name'] }, /mach service name/],
    ['a mach service listed twice', { machServices: ['com.a.b', 'com.a.b'] }, /twice/],
    ['an empty mach service', { machServices: [''] }, /non-empty/],
    ['a flag that is not a boolean', { keepAlive: 'yes' as never }, /true or false/],
    ['launchd-managed sockets', { sockets: { name: 'relay', path: '/tmp/r' } }, /Remove `sockets`/],
  ])('refuses %s with ERR_INVALID_ARGUMENT and says what to do', (_name, overrides, message) => {
    const options = { label: LABEL, program: PROGRAM, ...overrides } as LaunchdAgentPlistOptions;
    expect(() => launchdAgentPlist(options)).toThrow(invalid);
    expect(() => launchdAgentPlist(options)).toThrow(message);
  });

  it.each([
    '/Applications/Example.app/Contents/MacOS/relay',
    'MacOS/relay',
    'Contents',
    'Contents/../../bin/sh',
    'Contents//MacOS/relay',
    'Contents/./MacOS/relay',
  ])('refuses bundleProgram %j: it must be a plain path under Contents/', (bundleProgram) => {
    expect(() => launchdAgentPlist({ label: LABEL, bundleProgram })).toThrow(invalid);
    expect(() => launchdAgentPlist({ label: LABEL, bundleProgram })).toThrow(
      /Contents\/MacOS\/relay/,
    );
  });

  it('refuses a missing options object', () => {
    expect(() => launchdAgentPlist(undefined as never)).toThrow(invalid);
  });
});

describe('launchdAgentPlistPath and isValidLaunchdLabel', () => {
  it('puts the file under <home>/Library/LaunchAgents/<label>.plist', () => {
    expect(launchdAgentPlistPath(LABEL, { home: '/Users/alice' })).toBe(
      `/Users/alice/Library/LaunchAgents/${LABEL}.plist`,
    );
    expect(launchdAgentPlistPath(LABEL)).toMatch(
      /\/Library\/LaunchAgents\/com\.example\.secrets-agent\.relay\.plist$/,
    );
  });

  it('refuses a label that could leave the directory, and a relative home', () => {
    expect(() => launchdAgentPlistPath('../../.ssh/authorized_keys', { home: '/Users/a' })).toThrow(
      invalid,
    );
    expect(() => launchdAgentPlistPath(LABEL, { home: 'Users/alice' })).toThrow(invalid);
  });

  it('accepts reverse-DNS names only', () => {
    expect(isValidLaunchdLabel('com.example.App-2.relay')).toBe(true);
    expect(isValidLaunchdLabel('com.example.-relay')).toBe(false);
    expect(isValidLaunchdLabel('com.example_app.relay')).toBe(false);
    expect(isValidLaunchdLabel(`a.${'b'.repeat(260)}`)).toBe(false);
    expect(isValidLaunchdLabel(42)).toBe(false);
  });
});
