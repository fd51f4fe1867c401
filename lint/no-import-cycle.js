import fs from 'node:fs';
import path from 'node:path';
import ts from 'typescript';

/**
 * import-x/no-cycle leaves type-only imports out; a cycle through types still ties two modules together
 * (neither can move or be read alone). This rule follows every relative import (`import`, `import type`,
 * `export … from`, `import()`) and reports the import that closes a cycle back to the file being linted.
 */
const graph = new Map();

function resolve(from, spec) {
  if (!spec.startsWith('.')) return null;
  const base = path.resolve(path.dirname(from), spec);
  for (const c of [base.replace(/\.js$/, '.ts'), base, `${base}.ts`, path.join(base, 'index.ts')]) {
    if (c.endsWith('.ts') && fs.existsSync(c)) return c;
  }
  return null;
}

function importsOf(file) {
  let deps = graph.get(file);
  if (deps) return deps;
  deps = [];
  graph.set(file, deps);
  let text;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return deps;
  }
  for (const ref of ts.preProcessFile(text, true, true).importedFiles) {
    const target = resolve(file, ref.fileName);
    if (target) deps.push({ spec: ref.fileName, target });
  }
  return deps;
}

/** A shortest path of imports from `start` back to `file`, or null. */
function cycleThrough(file, start) {
  const prev = new Map([[start, null]]);
  const queue = [start];
  while (queue.length) {
    const at = queue.shift();
    for (const { target } of importsOf(at)) {
      if (target === file) {
        const route = [at];
        for (let p = prev.get(at); p; p = prev.get(p)) route.unshift(p);
        return route;
      }
      if (!prev.has(target)) {
        prev.set(target, at);
        queue.push(target);
      }
    }
  }
  return null;
}

export default {
  meta: { type: 'problem', messages: { cycle: 'Import cycle: {{route}}' }, schema: [] },
  create(context) {
    const file = context.filename;
    // a lint run re-reads the files it lints (the watch mode of an editor sees fresh text)
    graph.delete(file);
    const check = (node, spec) => {
      const target = resolve(file, spec);
      if (!target || target === file) return;
      const route = cycleThrough(file, target);
      if (!route) return;
      const rel = (f) => path.relative(context.cwd, f);
      context.report({ node, messageId: 'cycle', data: { route: [file, ...route, file].map(rel).join(' → ') } });
    };
    return {
      ImportDeclaration: (n) => check(n, n.source.value),
      ExportNamedDeclaration: (n) => n.source && check(n, n.source.value),
      ExportAllDeclaration: (n) => check(n, n.source.value),
      ImportExpression: (n) => n.source.type === 'Literal' && check(n, n.source.value),
    };
  },
};
