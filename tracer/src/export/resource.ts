// One OpenTelemetry Resource per traced process image, built once and reused for all its spans.
// Reusing the same object also lets the OTLP exporters group a process's spans under one resource.

import * as path from 'node:path';
import type { Attributes } from '@opentelemetry/api';
import {
  defaultResource,
  detectResources,
  envDetector,
  hostDetector,
  osDetector,
  resourceFromAttributes,
  type Resource,
} from '@opentelemetry/resources';
import {
  ATTR_SERVICE_NAME,
  ATTR_TELEMETRY_DISTRO_NAME,
  ATTR_TELEMETRY_DISTRO_VERSION,
} from '@opentelemetry/semantic-conventions';
import { rbinderVersion, type TracerConfig } from '../config';
import type { ProcessRecord } from '../records';

// Incubating semconv names, copied rather than imported from the unstable entry point
// (as the semantic-conventions package recommends).
export const ATTR_PROCESS_PID = 'process.pid';
export const ATTR_PROCESS_PARENT_PID = 'process.parent_pid';
export const ATTR_PROCESS_EXECUTABLE_NAME = 'process.executable.name';
export const ATTR_PROCESS_EXECUTABLE_PATH = 'process.executable.path';
export const ATTR_PROCESS_COMMAND_ARGS = 'process.command_args';
export const ATTR_RBINDER_TRACER_MODE = 'rbinder.tracer.mode';

/** Processes remembered at once; a fork-per-request server must not grow the cache forever. */
const MAX_CACHED_PROCESSES = 4096;

export type ResourceConfig = Pick<TracerConfig, 'serviceName' | 'command' | 'mode'>;

export class ProcessResources {
  /**
   * What holds for every process: service, host, OS, SDK, tracer mode and OTEL_RESOURCE_ATTRIBUTES.
   * Also the resource of the tracer's metrics, which are not per process.
   */
  readonly base: Resource;
  private readonly byPid = new Map<number, Resource>();

  constructor(config: ResourceConfig) {
    const detected = detectResources({ detectors: [hostDetector, osDetector] });
    // The SDK's env detector reads OTEL_RESOURCE_ATTRIBUTES (and OTEL_SERVICE_NAME) from process.env.
    const fromEnv = resourceFromAttributes(envDetector.detect().attributes ?? {});
    const explicitName = config.serviceName
      ? resourceFromAttributes({ [ATTR_SERVICE_NAME]: config.serviceName })
      : null;
    this.base = defaultResource()
      .merge(
        resourceFromAttributes({
          // Lowest precedence: OTEL_RESOURCE_ATTRIBUTES' service.name and --service-name win.
          [ATTR_SERVICE_NAME]: path.basename(config.command[0] ?? '') || 'unknown_service',
          [ATTR_TELEMETRY_DISTRO_NAME]: 'rbinder',
          [ATTR_TELEMETRY_DISTRO_VERSION]: rbinderVersion(),
          [ATTR_RBINDER_TRACER_MODE]: config.mode,
        }),
      )
      .merge(detected)
      .merge(fromEnv)
      .merge(explicitName);
  }

  /** Remembers a process image (a later exec of the same pid replaces it) and returns its resource. */
  resourceFor(process: ProcessRecord): Resource {
    const resource = this.base.merge(resourceFromAttributes(processAttributes(process)));
    this.remember(process.pid, resource);
    return resource;
  }

  /** The resource for a span's pid: its process record's, or pid alone when none has arrived yet. */
  resourceForPid(pid: number): Resource {
    const known = this.byPid.get(pid);
    if (known !== undefined) return known;
    const resource = this.base.merge(resourceFromAttributes({ [ATTR_PROCESS_PID]: pid }));
    this.remember(pid, resource);
    return resource;
  }

  private remember(pid: number, resource: Resource): void {
    this.byPid.delete(pid); // re-insert: Map order is then least recently recorded first
    this.byPid.set(pid, resource);
    if (this.byPid.size > MAX_CACHED_PROCESSES) {
      const oldest = this.byPid.keys().next().value;
      if (oldest !== undefined) this.byPid.delete(oldest);
    }
  }
}

function processAttributes(process: ProcessRecord): Attributes {
  const attributes: Attributes = {
    [ATTR_PROCESS_PID]: process.pid,
    [ATTR_PROCESS_PARENT_PID]: process.ppid,
  };
  if (process.executablePath !== '') {
    attributes[ATTR_PROCESS_EXECUTABLE_PATH] = process.executablePath;
    attributes[ATTR_PROCESS_EXECUTABLE_NAME] = path.basename(process.executablePath);
  }
  if (process.commandArgs.length > 0) attributes[ATTR_PROCESS_COMMAND_ARGS] = process.commandArgs;
  if (process.mode) attributes[ATTR_RBINDER_TRACER_MODE] = process.mode;
  return attributes;
}
