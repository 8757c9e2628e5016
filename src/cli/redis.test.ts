import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { CliIo } from './io.ts';
import { run } from './run.ts';

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

async function portcullis(args: string[], files: Record<string, string> = {}): Promise<Outcome> {
  let stdout = '';
  let stderr = '';
  const io: CliIo = {
    stdout: (text) => (stdout += text),
    stderr: (text) => (stderr += text),
    readInput: (path) => {
      const content = files[path];
      return content === undefined ? Promise.reject(Object.assign(new Error(`ENOENT: no such file, open '${path}'`), { path, syscall: 'open', code: 'ENOENT' })) : Promise.resolve(content);
    },
    readInputBytes: () => Promise.reject(new Error('not read as bytes')),
  };
  const code = await run(args, io);
  return { code, stdout, stderr };
}

const AGENT = ['--tenant', 'finance', '--namespace', 'finance', '--agent', 'finance-agent', '--password-file', '/secret/password'];
const FILES = { '/secret/password': 's3cret\n' };
const HASH = createHash('sha256').update('s3cret').digest('hex');
const RULES = `reset on #${HASH} ~portcullis:{finance/finance/finance-agent}:* resetchannels -@all +evalsha +eval +select +time +hmget +hset +pexpire +pexpireat +zremrangebyscore +zcard +zadd +zrem +zrange`;

describe('portcullis redis acl', () => {
  it.each([
    ['an ACL file line by default', [], `user portcullis/finance/finance/finance-agent ${RULES}\n`],
    ['an ACL SETUSER command for redis-cli', ['--format', 'command'], `ACL SETUSER portcullis/finance/finance/finance-agent ${RULES}\n`],
  ])('prints %s, with the hash of the password and never the password', async (_, extra, expected) => {
    const { code, stdout, stderr } = await portcullis(['redis', 'acl', ...AGENT, ...extra], FILES);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(stdout).toBe(expected);
    expect(stdout).not.toContain('s3cret');
  });

  it('prints the line that turns the default user off', async () => {
    expect(await portcullis(['redis', 'acl', '--default-user-off'])).toEqual({ code: 0, stdout: 'user default off resetpass resetkeys resetchannels -@all\n', stderr: '' });
  });

  it.each([
    ['no agent', ['--tenant', 'finance', '--namespace', 'finance', '--password-file', '/secret/password'], FILES, 'redis acl needs --agent'],
    ['no password file', ['--tenant', 'finance', '--namespace', 'finance', '--agent', 'a'], FILES, 'redis acl needs --password-file'],
    ['an empty password', AGENT, { '/secret/password': '\n' }, '--password-file /secret/password is empty'],
    ['a password of two lines', AGENT, { '/secret/password': 'a\nb' }, '--password-file /secret/password holds more than one line'],
    ['an agent name with a glob star', ['--tenant', 'finance', '--namespace', 'finance', '--agent', '*', '--password-file', '/secret/password'], FILES, 'the agent "*" cannot name counters'],
    ['an unknown format', [...AGENT, '--format', 'json'], FILES, '--format must be one of aclfile, command, not "json"'],
    ['the default user with an agent', [...AGENT, '--default-user-off'], FILES, '--default-user-off prints one line on its own'],
  ])('refuses %s with its usage', async (_, args, files, message) => {
    const { code, stdout, stderr } = await portcullis(['redis', 'acl', ...args], files);
    expect(code).toBe(2);
    expect(stdout).toBe('');
    expect(stderr).toContain(`portcullis: ${message}`);
    expect(stderr).toContain('Usage: portcullis redis acl');
  });

  it('says which password file cannot be read', async () => {
    const { code, stderr } = await portcullis(['redis', 'acl', ...AGENT], {});
    expect(code).toBe(2);
    expect(stderr).toContain('cannot read /secret/password');
  });
});
