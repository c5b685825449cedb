/**
 * The live block at the bottom of the terminal, drawn by listr2: one task that lives for the whole run,
 * its title the line of totals and its output the other lines; lasting lines are printed above it.
 */
import { Writable } from 'node:stream';
import { styleText } from 'node:util';
import { DefaultRenderer, Listr, ListrDefaultRendererLogLevels, ListrLogger, ProcessOutput, Spinner, type ListrTaskWrapper } from 'listr2';

/** Columns listr2 takes from a line: its icon or the indentation of the output, and its own margin. */
export const LISTR_MARGIN = 5;

type Style = Parameters<typeof styleText>[0];
/** The colours of listr2's icons (the spinner, the tick, the cross). */
const ICON_STYLES: Partial<Record<ListrDefaultRendererLogLevels, Style>> = {
  [ListrDefaultRendererLogLevels.PENDING]: 'yellow',
  [ListrDefaultRendererLogLevels.COMPLETED]: 'green',
  [ListrDefaultRendererLogLevels.FAILED]: 'red',
};

/**
 * Styles text when `color` is on, whatever process.stdout is (the block goes to stderr); never an escape
 * sequence when it is off (listr2's own colours follow process.stdout and NO_COLOR only).
 */
export const painter =
  (color: boolean) =>
  (style: Style, text: string): string =>
    color ? styleText(style, text, { validateStream: false }) : text;

/** log-update's function, which listr2's renderer keeps to itself. */
interface Updater {
  persist(text: string): void;
}

/** listr2's default renderer, drawing on any stream, that can print lines above its render. */
class BlockRenderer extends DefaultRenderer {
  /** Not only when process.stdout is a terminal: the block goes to stderr. */
  static override nonTTY = true;
  static created: ((r: BlockRenderer) => void) | undefined;

  constructor(...args: ConstructorParameters<typeof DefaultRenderer>) {
    super(...args);
    BlockRenderer.created?.(this);
  }

  /** Prints lines above the render: log-update erases the block, writes them, and the block is drawn again under them. */
  above(text: string): boolean {
    const updater = (this as unknown as { updater?: Updater }).updater;
    if (!updater) return false;
    updater.persist(text);
    this.update();
    return true;
  }
}

/** listr2's spinner, whose timer does not keep the process alive (as the block's own timer does not). */
class UnrefSpinner extends Spinner {
  private timer: NodeJS.Timeout | undefined;
  override start(cb?: () => void, interval = 100): void {
    this.timer = setInterval(() => {
      this.spin();
      cb?.();
    }, interval);
    this.timer.unref();
  }
  override stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
  override isRunning(): boolean {
    return this.timer !== undefined;
  }
}

type Task = ListrTaskWrapper<unknown, typeof BlockRenderer, typeof BlockRenderer>;

export interface LiveBlock {
  /** Sets the block: the totals (the task's title) and the lines under it. */
  set(title: string, lines: string[]): void;
  /** Prints lasting lines above the block. */
  above(lines: string[]): void;
  /** Ends the task and waits for listr2 to print the final block and give the stream back. */
  close(): Promise<void>;
}

/** The terminal's size, or 80×24 when it tells none (0 under script(1) or a pseudo-terminal never sized). */
export const termSize = (out: NodeJS.WriteStream): { columns: number; rows: number } => ({ columns: out.columns || 80, rows: out.rows || 24 });

/** `out` as listr2 and log-update see it: its size never 0 (they would wrap every line to nothing). */
function sized(out: NodeJS.WriteStream): NodeJS.WriteStream {
  return new Proxy(out, {
    get: (target, prop, receiver): unknown => (prop === 'columns' || prop === 'rows' ? termSize(target)[prop] : Reflect.get(target, prop, receiver)),
  });
}

/** Starts the block on `out` with its first state (lines that already fit `out.columns - LISTR_MARGIN`). */
export function startLiveBlock(out: NodeJS.WriteStream, color: boolean, title: string, lines: string[]): LiveBlock {
  // listr2 takes a second stream (for its stderr levels, which the default renderer does not use).
  const sink = new Writable({
    write: (_chunk, _enc, done) => {
      done();
    },
  });
  const logger = new ListrLogger<ListrDefaultRendererLogLevels>({
    useIcons: true,
    processOutput: new ProcessOutput(sized(out), sink as unknown as NodeJS.WriteStream),
  });
  const paint = painter(color);
  const iconColor = Object.fromEntries(
    Object.values(ListrDefaultRendererLogLevels).map((level) => {
      const style = ICON_STYLES[level];
      return [level, (icon: string) => (style ? paint(style, icon) : icon)];
    }),
  );
  let renderer: BlockRenderer | undefined;
  let task: Task | undefined;
  let finish: (() => void) | undefined;
  let closing = false;
  const state = (t: string, l: string[]): { title: string; output: string } => ({ title: paint('bold', t), output: l.join('\n') });
  let shown = state(title, lines);
  BlockRenderer.created = (r) => (renderer = r);
  const list = new Listr<unknown, typeof BlockRenderer, typeof BlockRenderer>(
    [
      {
        title: shown.title,
        task: (_ctx, t) => {
          task = t;
          [t.title, t.output] = [shown.title, shown.output];
          return closing ? Promise.resolve() : new Promise<void>((resolve) => (finish = resolve));
        },
        rendererOptions: { outputBar: true, persistentOutput: true },
      },
    ],
    {
      renderer: BlockRenderer,
      fallbackRenderer: BlockRenderer,
      registerSignalListeners: false,
      exitOnError: false,
      rendererOptions: {
        logger,
        formatOutput: 'truncate',
        spinner: new UnrefSpinner(),
        // The output is the whole block in one piece: its lines aligned under the title's text.
        icon: { [ListrDefaultRendererLogLevels.OUTPUT]: ' ' },
        color: iconColor,
      },
    },
  );
  const running = list.run().then(
    () => undefined,
    () => undefined,
  );
  BlockRenderer.created = undefined;
  const direct = (text: string): void => void out.write(text);
  return {
    set(t, l) {
      const next = state(t, l);
      if (task && next.title !== shown.title) task.title = next.title;
      if (task && next.output !== shown.output) task.output = next.output;
      shown = next;
    },
    above(lines) {
      if (lines.length === 0) return;
      const text = `${lines.join('\n')}\n`;
      if (!renderer?.above(text)) direct(text);
    },
    async close() {
      closing = true;
      finish?.();
      await running;
    },
  };
}
