// The RBAC files grant exactly what the operator calls: every permission in API_CALLS is granted,
// every rule is used by some call, and no code outside kube.ts talks to the API server.

import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { API_CALLS, type Permission } from './kube';

interface Rule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
  resourceNames?: string[];
}

const rbacDir = join(__dirname, '..', 'rbac');
const documents = readdirSync(rbacDir)
  .filter((f) => f.endsWith('.yaml'))
  .flatMap((f) => parseAllDocuments(readFileSync(join(rbacDir, f), 'utf8')).map((d) => d.toJS() as { kind: string; metadata: { namespace?: string }; rules?: Rule[] }));
const clusterRules = documents.filter((d) => d.kind === 'ClusterRole').flatMap((d) => d.rules ?? []);
const roleRules = documents.filter((d) => d.kind === 'Role').flatMap((d) => d.rules ?? []);
const permissions: Permission[] = Object.values(API_CALLS).flat();

function grants(rule: Rule, p: Permission): boolean {
  return (
    rule.apiGroups.includes(p.apiGroup) &&
    rule.resources.includes(p.resource) &&
    rule.verbs.includes(p.verb) &&
    // A rule limited to names grants only a permission for one of them.
    (!rule.resourceNames || (p.resourceName !== undefined && rule.resourceNames.includes(p.resourceName)))
  );
}

describe('RBAC', () => {
  it('has a ClusterRole and a Role in rbinder-system, bound to the controller ServiceAccount', () => {
    expect(documents.map((d) => d.kind).sort()).toEqual(['ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding']);
    expect(documents.find((d) => d.kind === 'Role')!.metadata.namespace).toBe('rbinder-system');
  });

  for (const [call, perms] of Object.entries(API_CALLS)) {
    it(`grants ${call}`, () => {
      for (const p of perms) {
        const rules = p.scope === 'cluster' ? clusterRules : roleRules;
        expect(rules.some((r) => grants(r, p)), `${p.verb} ${p.apiGroup}/${p.resource}${p.resourceName ? ` ${p.resourceName}` : ''} (${p.scope})`).toBe(true);
      }
    });
  }

  it('grants nothing no call uses', () => {
    const unused: string[] = [];
    for (const [scope, rules] of [['cluster', clusterRules], ['namespace', roleRules]] as const) {
      for (const rule of rules) {
        for (const apiGroup of rule.apiGroups) {
          for (const resource of rule.resources) {
            for (const verb of rule.verbs) {
              for (const resourceName of rule.resourceNames ?? [undefined]) {
                const used = permissions.some((p) => p.scope === scope && p.apiGroup === apiGroup && p.resource === resource && p.verb === verb && (resourceName === undefined || p.resourceName === resourceName));
                if (!used) unused.push(`${scope}: ${verb} ${apiGroup}/${resource}${resourceName ? ` ${resourceName}` : ''}`);
              }
            }
          }
        }
      }
    }
    expect(unused).toEqual([]);
  });

  it('makes every API call through Kube.call with a name from API_CALLS, and only in kube.ts', () => {
    const source = readFileSync(join(__dirname, 'kube.ts'), 'utf8');
    const invocations = [...source.matchAll(/this\.(apps|core|custom|coordination|events|admission)\.\w+\(/g)];
    expect(invocations.length).toBeGreaterThan(20);
    for (const m of invocations) {
      // The wrapper opens shortly before the client call, in the same statement.
      const before = source.slice(0, m.index);
      const statement = before.slice(Math.max(before.lastIndexOf(';'), before.lastIndexOf('{\n')) + 1);
      expect(statement, m[0]).toMatch(/this\.(call|listWatch)\(\s*'/);
    }
    for (const file of readdirSync(__dirname).filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts') && f !== 'kube.ts')) {
      const text = readFileSync(join(__dirname, file), 'utf8');
      expect(text, file).not.toMatch(/makeApiClient|new Watch\(|new ListWatch\(|\bfetch\(/);
    }
  });
});
