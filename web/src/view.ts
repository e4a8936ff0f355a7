// The list the user sees: the synced tasks, filtered and sorted on the client so live changes
// show at once. Full-text search is the server's (ListTasks `query`): its matches arrive as a
// set of names that narrows the list further.

import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Priority, Task_State, type Task } from "./gen/taskmesh/task/v1/task_pb";
import { dueInstant, isoDate, viewerZone } from "./format";

/** The toolbar's choices. Dates are `YYYY-MM-DD` in the viewer's zone, inclusive; "" is open. */
export interface View {
  status: "open" | "completed" | "all";
  /** Lowest priority shown; `UNSPECIFIED` means any. */
  minPriority: Priority;
  /** Only tasks with this tag (case-insensitive); "" means any. */
  tag: string;
  dueFrom: string;
  dueTo: string;
  sort: "due" | "priority" | "created" | "title";
  /** Full-text search words; "" means no search. */
  query: string;
}

/** The view a new session starts with: open tasks, by due. */
export const defaultView: View = {
  status: "open",
  minPriority: Priority.UNSPECIFIED,
  tag: "",
  dueFrom: "",
  dueTo: "",
  sort: "due",
  query: "",
};

const localDay = new Intl.DateTimeFormat("en-CA", { timeZone: viewerZone });

/** The due's day: its own date, or the due instant's date in the viewer's zone. */
function dueDay(task: Task): string | undefined {
  const due = task.due;
  if (due?.value.case === "date") return isoDate(due.value.value);
  if (due?.value.case === "time") return localDay.format(timestampDate(due.value.value));
  return undefined;
}

function effectivePriority(task: Task): Priority {
  return task.priority === Priority.UNSPECIFIED ? Priority.NONE : task.priority;
}

function created(task: Task): number {
  return task.createTime ? timestampDate(task.createTime).getTime() : 0;
}

/** Due first (none last), then higher priority, then older: ListTasks' default order. */
function byDue(a: Task, b: Task): number {
  const da = dueInstant(a);
  const db = dueInstant(b);
  if (da !== db) {
    if (da === undefined) return 1;
    if (db === undefined) return -1;
    return da - db;
  }
  return effectivePriority(b) - effectivePriority(a) || created(a) - created(b);
}

const comparators: Record<View["sort"], (a: Task, b: Task) => number> = {
  due: byDue,
  priority: (a, b) => effectivePriority(b) - effectivePriority(a) || byDue(a, b),
  created: (a, b) => created(b) - created(a),
  title: (a, b) => a.title.localeCompare(b.title) || byDue(a, b),
};

/**
 * The tasks to show, in order. `matches` is the server's full-text result for `view.query`
 * (undefined while there is no query).
 */
export function visibleTasks(
  tasks: Iterable<Task>,
  view: View,
  matches: ReadonlySet<string> | undefined,
): Task[] {
  const tag = view.tag.toLowerCase();
  const shown: Task[] = [];
  for (const task of tasks) {
    if (view.status === "open" && task.state !== Task_State.OPEN) continue;
    if (view.status === "completed" && task.state !== Task_State.COMPLETED) continue;
    if (view.minPriority !== Priority.UNSPECIFIED && effectivePriority(task) < view.minPriority) continue;
    if (tag && !task.tags.some((t) => t.toLowerCase() === tag)) continue;
    if (view.dueFrom || view.dueTo) {
      const day = dueDay(task);
      if (!day) continue;
      if (view.dueFrom && day < view.dueFrom) continue;
      if (view.dueTo && day > view.dueTo) continue;
    }
    if (matches && !matches.has(task.name)) continue;
    shown.push(task);
  }
  return shown.sort(comparators[view.sort]);
}

/** Every tag in use, sorted, for the tag filter. */
export function allTags(tasks: Iterable<Task>): string[] {
  const tags = new Map<string, string>();
  for (const task of tasks) for (const tag of task.tags) tags.set(tag.toLowerCase(), tag);
  return [...tags.values()].sort((a, b) => a.localeCompare(b));
}
