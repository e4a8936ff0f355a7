// How tasks read on screen: due times in the viewer's time zone, overdue, priorities.

import { timestampDate, timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { Date as CivilDate } from "./gen/google/type/date_pb";
import { Priority, Task_State, type Due, type Task } from "./gen/taskmesh/task/v1/task_pb";

/** The viewer's IANA time zone (the browser's), e.g. `Europe/Berlin`. */
export const viewerZone = Intl.DateTimeFormat().resolvedOptions().timeZone;

const dateTime = new Intl.DateTimeFormat(undefined, {
  weekday: "short",
  day: "numeric",
  month: "short",
  year: "numeric",
  hour: "2-digit",
  minute: "2-digit",
});
const dateOnly = new Intl.DateTimeFormat(undefined, {
  weekday: "short",
  day: "numeric",
  month: "short",
  year: "numeric",
  timeZone: "UTC",
});

/** `YYYY-MM-DD` of a civil date. */
export function isoDate(date: CivilDate): string {
  const pad = (n: number, width = 2) => String(n).padStart(width, "0");
  return `${pad(date.year, 4)}-${pad(date.month)}-${pad(date.day)}`;
}

/** The `YYYY-MM-DD` of `now` (milliseconds) in `zone`. */
function dayIn(zone: string, now: number): string {
  // en-CA formats as YYYY-MM-DD.
  return new Intl.DateTimeFormat("en-CA", { timeZone: zone }).format(new Date(now));
}

/** Milliseconds `zone` is ahead of UTC at the instant `utc`. */
function zoneOffset(utc: number, zone: string): number {
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat("en-US", {
      timeZone: zone,
      hourCycle: "h23",
      year: "numeric",
      month: "numeric",
      day: "numeric",
      hour: "numeric",
      minute: "numeric",
      second: "numeric",
    })
      .formatToParts(new Date(utc))
      .map((p) => [p.type, Number(p.value)]),
  );
  const wall = Date.UTC(parts.year, parts.month - 1, parts.day, parts.hour, parts.minute, parts.second);
  return wall - Math.floor(utc / 1000) * 1000;
}

/** The instant of local midnight starting `year-month-day` in `zone`. */
function midnight(year: number, month: number, day: number, zone: string): number {
  const wall = Date.UTC(year, month - 1, day);
  // Two rounds settle the offset except inside a DST gap, where either side will do here.
  const first = wall - zoneOffset(wall, zone);
  return wall - zoneOffset(first, zone);
}

/** The due as the viewer reads it: an instant in the viewer's zone, or the whole day. */
export function formatDue(due: Due): string {
  if (due.value.case === "time") {
    return dateTime.format(timestampDate(due.value.value));
  }
  if (due.value.case === "date") {
    const d = due.value.value;
    return dateOnly.format(new Date(Date.UTC(d.year, d.month - 1, d.day)));
  }
  return "";
}

/** Whether an open task's due has passed (a date-only due: once its day is over in its zone). */
export function isOverdue(task: Task, now: number = Date.now()): boolean {
  if (task.state !== Task_State.OPEN || !task.due) return false;
  const due = task.due;
  if (due.value.case === "time") return timestampDate(due.value.value).getTime() < now;
  if (due.value.case === "date") return isoDate(due.value.value) < dayIn(due.timeZone || viewerZone, now);
  return false;
}

/** The instant a task sorts and filters by: its due time, a date-only due at that day's end. */
export function dueInstant(task: Task): number | undefined {
  const due = task.due;
  if (!due) return undefined;
  if (due.value.case === "time") return timestampDate(due.value.value).getTime();
  if (due.value.case === "date") {
    // As ListTasks orders it: the end of that day in its zone (the next day's first instant).
    const d = due.value.value;
    const next = new Date(Date.UTC(d.year, d.month - 1, d.day + 1));
    return midnight(next.getUTCFullYear(), next.getUTCMonth() + 1, next.getUTCDate(), due.timeZone || viewerZone);
  }
  return undefined;
}

/** Short label and CSS class of each priority. */
export const priorities: ReadonlyArray<{ value: Priority; label: string }> = [
  { value: Priority.NONE, label: "None" },
  { value: Priority.LOW, label: "Low" },
  { value: Priority.MEDIUM, label: "Medium" },
  { value: Priority.HIGH, label: "High" },
  { value: Priority.URGENT, label: "Urgent" },
];

/** The label of a priority (unspecified reads as none). */
export function priorityLabel(priority: Priority): string {
  return priorities.find((p) => p.value === priority)?.label ?? "None";
}

/** A `datetime-local` input value (viewer's zone; seconds only when not zero) for an instant. */
export function toLocalInput(timestamp: Timestamp): string {
  const d = timestampDate(timestamp);
  const pad = (n: number) => String(n).padStart(2, "0");
  const seconds = d.getSeconds() ? `:${pad(d.getSeconds())}` : "";
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}${seconds}`;
}

/** The instant of a `datetime-local` input value in the viewer's zone; undefined if invalid. */
export function fromLocalInput(value: string): Timestamp | undefined {
  if (!value) return undefined;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? undefined : timestampFromDate(date);
}

/** A notification's or change's time, short. */
export function formatTime(timestamp: Timestamp | undefined): string {
  return timestamp ? dateTime.format(timestampDate(timestamp)) : "";
}
