import { resolve } from 'node:path';
import { didYouMean } from '../config/suggest.js';
import { isHidden } from '../config/prune.js';
import type { PathPart } from '../config/source.js';
import { canonical } from '../core/canonical.js';
import type { CompiledStep, StepCompileContext } from '../kinds/contracts.js';
import type { Expression } from '../expr/expression.js';
import type { AsyncApiCatalog } from './asyncapi.js';
import type { CompileContext } from './context.js';
import type { RawStep } from './raw.js';

export interface CompiledChainStep {
  step: CompiledStep;
  /** Canonical config of the step, part of the route key. */
  key: string;
  /** Files the step read, for the route key. */
  files: string[];
  /** What else the step took from outside the config (the AsyncAPI contracts it validates against), for the route key. */
  inputs: string[];
  /** Where the step is written. */
  at: PathPart[];
  /** The expressions the step compiled, each with where it is written (for field-reads.ts). */
  expressions: { expression: Expression; at: PathPart[] }[];
}

/** Steps (in `chains:` and in routes' `through:`, and a forward target's `auth`), each compiled by its kind. */
export class StepCompiler {
  constructor(
    private readonly ctx: CompileContext,
    private readonly asyncapi: AsyncApiCatalog,
  ) {}

  /** The named chains; a chain with a step that does not compile maps to undefined (its problems are reported). */
  chains(): Map<string, CompiledChainStep[] | undefined> {
    const chains = new Map<string, CompiledChainStep[] | undefined>();
    for (const [name, steps] of Object.entries(this.ctx.config.chains ?? {})) chains.set(name, this.compile(steps, ['chains', name]));
    return chains;
  }

  /** Compiles steps; undefined when any fails (its problems are reported). `single`: `at` is the step itself, not a list. */
  compile(steps: RawStep[], at: PathPart[], single = false): CompiledChainStep[] | undefined {
    const out: CompiledChainStep[] = [];
    let failed = false;
    steps.forEach((raw, i) => {
      // A step the schema check refused was taken out (config/prune.ts): already reported.
      if (raw === undefined) {
        failed = true;
        return;
      }
      const [kindName, options] = Object.entries(raw)[0]!;
      const kind = this.ctx.registry.steps.get(kindName)!;
      const stepAt: PathPart[] = single ? [...at, kindName] : [...at, i, kindName];
      const files: string[] = [];
      const inputs: string[] = [];
      const errorsBefore = this.ctx.diagnostics.length;
      const expressionsBefore = this.ctx.expressions.length;
      const step = kind.compile(options, this.context(stepAt, files, inputs));
      if (!step || this.ctx.diagnostics.length > errorsBefore) failed = true;
      else out.push({ step, key: canonical(raw), files, inputs, at: stepAt, expressions: this.ctx.expressions.slice(expressionsBefore) });
    });
    return failed ? undefined : out;
  }

  /** What a step kind's compile() gets; files it reads are appended to `files`, the AsyncAPI contracts it takes to `inputs`. */
  context(stepAt: PathPart[], files: string[], inputs: string[] = []): StepCompileContext {
    const ctx = this.ctx;
    return {
      report: (rel, code, message) => ctx.report([...stepAt, ...rel], code, message),
      compileExpression: (source, rel) => ctx.expression(source, [...stepAt, ...rel]),
      compileJsonSchema: (schema, rel, origin) =>
        ctx.jsonSchema(schema, [...stepAt, ...rel], origin, '2020', (name, abs, site) => {
          files.push(abs);
          return ctx.readDocument(abs, name, [...stepAt, ...rel], site);
        }),
      readFile: ctx.fileReader(stepAt, files),
      readDocument: (file, rel, options) => {
        const abs = resolve(ctx.dir, file);
        files.push(abs);
        return ctx.readDocument(abs, file, [...stepAt, ...rel], undefined, options?.json);
      },
      checkBroker: (name, rel) => {
        if (ctx.config.brokers?.[name]) return true;
        if (isHidden(ctx.hidden.brokers, name)) return false;
        ctx.report([...stepAt, ...rel], 'EG_CONFIG_REF', `broker '${name}' is not defined${didYouMean(name, Object.keys(ctx.config.brokers ?? {}))}`);
        return false;
      },
      checkTopic: (broker, topic, rel) => ctx.checkTopic(broker, topic, 'publish', [...stepAt, ...rel]),
      checkQos: (broker, rel) => ctx.checkQos(broker, [...stepAt, ...rel]),
      asyncapiContracts: (ref, rel) => this.asyncapi.contracts(ref, [...stepAt, ...rel], inputs),
    };
  }
}
