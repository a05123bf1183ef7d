import { describe, expect, it } from 'vitest';
import {
  DEFAULT_POLKIT_MESSAGE,
  isValidPolkitActionId,
  type PolkitActionFileOptions,
  polkitActionFile,
  polkitActionFilePath,
} from '../../../src/prompt/polkit/action-file.js';

const ACTION = 'com.example.secrets-agent.use-account';

describe('polkitActionFile', () => {
  it('writes one action: the message with $(account) and $(process), auth_self everywhere, the owner annotation', () => {
    const xml = polkitActionFile({ actionId: ACTION, owner: 'alice' });
    expect(xml).toMatch(/^<\?xml version="1.0" encoding="UTF-8"\?>\n<!DOCTYPE policyconfig/);
    expect(xml).toContain(`<action id="${ACTION}">`);
    expect(xml).toContain(`<message>${DEFAULT_POLKIT_MESSAGE}</message>`);
    expect(DEFAULT_POLKIT_MESSAGE).toContain('$(account)');
    expect(DEFAULT_POLKIT_MESSAGE).toContain('$(process)');
    expect(xml).toContain('<allow_any>auth_self</allow_any>');
    expect(xml).toContain('<allow_inactive>auth_self</allow_inactive>');
    expect(xml).toContain('<allow_active>auth_self</allow_active>');
    expect(xml).toContain(
      '<annotate key="org.freedesktop.policykit.owner">unix-user:alice</annotate>',
    );
    // polkit's DTD order: defaults before annotations.
    expect(xml.indexOf('</defaults>')).toBeLessThan(xml.indexOf('<annotate'));
    expect(xml.match(/<action /g)).toHaveLength(1);
  });

  it('lists several owners, by name, uid or unix-user identity', () => {
    const xml = polkitActionFile({ actionId: ACTION, owner: ['alice', '1001', 'unix-user:bob'] });
    expect(xml).toContain('>unix-user:alice unix-user:1001 unix-user:bob</annotate>');
  });

  it('escapes text for XML, and takes vendor, URL, description, message and icon', () => {
    const xml = polkitActionFile({
      actionId: ACTION,
      owner: 'alice',
      vendor: 'Tom & Jerry <Secrets>',
      vendorUrl: 'https://example.com/?a=1&b=2',
      description: 'Use "an" account',
      message: "Let $(process) use $(account)? It's fine",
      iconName: 'dialog-password',
    });
    expect(xml).toContain('<vendor>Tom &amp; Jerry &lt;Secrets&gt;</vendor>');
    expect(xml).toContain('<vendor_url>https://example.com/?a=1&amp;b=2</vendor_url>');
    expect(xml).toContain('<description>Use &quot;an&quot; account</description>');
    expect(xml).toContain('<message>Let $(process) use $(account)? It&apos;s fine</message>');
    expect(xml).toContain('<icon_name>dialog-password</icon_name>');
  });

  it('takes auth_admin or no as defaults', () => {
    const xml = polkitActionFile({
      actionId: ACTION,
      owner: 'alice',
      defaults: { allowAny: 'no', allowActive: 'auth_admin' },
    });
    expect(xml).toContain('<allow_any>no</allow_any>');
    expect(xml).toContain('<allow_inactive>auth_self</allow_inactive>');
    expect(xml).toContain('<allow_active>auth_admin</allow_active>');
  });

  it.each<[string, Partial<PolkitActionFileOptions>]>([
    ['an invalid action id', { actionId: 'Com.Example' }],
    ['an action id without a dot', { actionId: 'example' }],
    ['an action id with doubled separators', { actionId: 'com..example' }],
    ['a missing owner', { owner: [] }],
    ['a group owner (polkit ignores it)', { owner: 'unix-group:wheel' }],
    ['an owner with spaces', { owner: 'alice bob' }],
    ['a default that grants silently', { defaults: { allowAny: 'yes' as never } }],
    ['a default that keeps approvals', { defaults: { allowActive: 'auth_self_keep' as never } }],
    ['a multi-line message', { message: 'line one\nline two' }],
    ['an empty message', { message: '  ' }],
  ])('refuses %s with ERR_INVALID_ARGUMENT', (_name, overrides) => {
    expect(() => polkitActionFile({ actionId: ACTION, owner: 'alice', ...overrides })).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
    );
  });

  it('explains why a group owner is refused', () => {
    expect(() => polkitActionFile({ actionId: ACTION, owner: 'unix-group:wheel' })).toThrow(
      /calling user only/,
    );
  });
});

describe('polkitActionFilePath and isValidPolkitActionId', () => {
  it('puts the file under /usr/share/polkit-1/actions/<id>.policy', () => {
    expect(polkitActionFilePath(ACTION)).toBe(`/usr/share/polkit-1/actions/${ACTION}.policy`);
    expect(() => polkitActionFilePath('../../etc/passwd')).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
    );
  });

  it('accepts what polkit accepts, namespaced', () => {
    expect(isValidPolkitActionId('org.freedesktop.policykit.exec')).toBe(true);
    expect(isValidPolkitActionId('com.example.app-2.use-account')).toBe(true);
    expect(isValidPolkitActionId('com.example.App')).toBe(false);
    expect(isValidPolkitActionId('com.example_app.use')).toBe(false);
    expect(isValidPolkitActionId(`a.${'b'.repeat(260)}`)).toBe(false);
    expect(isValidPolkitActionId(42)).toBe(false);
  });
});
