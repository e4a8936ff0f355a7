// Create and edit a task: title, description, priority, tags, due (a time or a whole day, in
// the viewer's zone), reminders (before the due or at a time) and recurrence presets.
// Violations the server returns show next to their field; nothing is dropped silently.

import { create } from "@bufbuild/protobuf";
import { durationFromMs, durationMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { useState } from "preact/hooks";
import { describe, requestId, violations, type Api, type Violation } from "./api";
import { DateSchema } from "./gen/google/type/date_pb";
import {
  DueSchema,
  Priority,
  RecurrenceSchema,
  Recurrence_Anchor,
  ReminderSchema,
  TaskSchema,
  type Task,
} from "./gen/taskmesh/task/v1/task_pb";
import { fromLocalInput, isoDate, priorities, toLocalInput, viewerZone } from "./format";

/** RFC 5545 rules behind the repeat presets. */
const presets = {
  daily: "FREQ=DAILY",
  weekdays: "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR",
  weekly: "FREQ=WEEKLY",
  monthly: "FREQ=MONTHLY",
  yearly: "FREQ=YEARLY",
} as const;
type Repeat = "none" | keyof typeof presets | "custom";

interface ReminderDraft {
  /** The reminder's id, kept on edit so the server keeps its state; "" for new ones. */
  id: string;
  kind: "before" | "at";
  /** Milliseconds before the due (kind "before"); negative is after the due. */
  beforeMs: number;
  /** `datetime-local` value (kind "at"). */
  at: string;
}

interface Draft {
  title: string;
  description: string;
  priority: Priority;
  /** Comma-separated. */
  tags: string;
  dueKind: "none" | "time" | "date";
  dueTime: string;
  dueDate: string;
  dueZone: string;
  reminders: ReminderDraft[];
  repeat: Repeat;
  rrule: string;
  fromCompletion: boolean;
}

/** The form's fields; every violation lands on one of them or on `general`. */
type Field = "title" | "description" | "priority" | "tags" | "due" | "reminders" | "recurrence" | "general";
type Errors = Partial<Record<Field, string[]>>;

const FIELDS: readonly Field[] = ["title", "description", "priority", "tags", "due", "reminders", "recurrence"];

function draftOf(task: Task | undefined): Draft {
  const due = task?.due;
  const rrule = task?.recurrence?.rrule ?? "";
  const preset = (Object.keys(presets) as (keyof typeof presets)[]).find((k) => presets[k] === rrule);
  return {
    title: task?.title ?? "",
    description: task?.description ?? "",
    priority: task?.priority || Priority.NONE,
    tags: task?.tags.join(", ") ?? "",
    dueKind: due?.value.case ?? "none",
    dueTime: due?.value.case === "time" ? toLocalInput(due.value.value) : "",
    dueDate: due?.value.case === "date" ? isoDate(due.value.value) : "",
    dueZone: due?.timeZone || viewerZone,
    reminders: (task?.reminders ?? []).map((r) => ({
      id: r.id,
      kind: r.trigger.case === "absoluteTime" ? "at" : "before",
      beforeMs: r.trigger.case === "relativeToDue" ? -durationMs(r.trigger.value) : 15 * 60000,
      at: r.trigger.case === "absoluteTime" ? toLocalInput(r.trigger.value) : "",
    })),
    repeat: !rrule ? "none" : (preset ?? "custom"),
    rrule,
    fromCompletion: task?.recurrence?.anchor === Recurrence_Anchor.COMPLETION,
  };
}

/**
 * The task a draft describes, or the client-side errors that keep it from being sent.
 * `dueEdited`: the due inputs (in the viewer's zone) were changed, so the due takes the
 * viewer's zone; otherwise it keeps its own.
 */
function taskOf(draft: Draft, original: Task | undefined, dueEdited: boolean): { task: Task; errors: Errors } {
  const errors: Errors = {};
  const task = create(TaskSchema, {
    title: draft.title,
    description: draft.description,
    priority: draft.priority,
    tags: draft.tags.split(",").map((t) => t.trim()).filter(Boolean),
  });
  // On the wire the due's zone is where the person is when they set it; an existing task's
  // zone is kept unless the due itself changes.
  const zone = dueEdited || !draft.dueZone ? viewerZone : draft.dueZone;
  if (draft.dueKind === "time") {
    const time = fromLocalInput(draft.dueTime);
    if (time) task.due = create(DueSchema, { value: { case: "time", value: time }, timeZone: zone });
    else errors.due = ["Enter a date and time."];
  } else if (draft.dueKind === "date") {
    const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(draft.dueDate);
    if (m) {
      const date = create(DateSchema, { year: +m[1], month: +m[2], day: +m[3] });
      task.due = create(DueSchema, { value: { case: "date", value: date }, timeZone: zone });
    } else errors.due = ["Enter a date."];
  }
  draft.reminders.forEach((r, i) => {
    if (r.kind === "before") {
      task.reminders.push(
        create(ReminderSchema, {
          id: r.id,
          trigger: { case: "relativeToDue", value: durationFromMs(-r.beforeMs) },
        }),
      );
    } else {
      const at = fromLocalInput(r.at);
      if (at) task.reminders.push(create(ReminderSchema, { id: r.id, trigger: { case: "absoluteTime", value: at } }));
      else (errors.reminders ??= []).push(`Reminder ${i + 1}: enter a date and time.`);
    }
  });
  const rrule = draft.repeat === "none" ? "" : draft.repeat === "custom" ? draft.rrule.trim() : presets[draft.repeat];
  if (rrule) {
    task.recurrence = create(RecurrenceSchema, {
      rrule,
      anchor: draft.fromCompletion ? Recurrence_Anchor.COMPLETION : Recurrence_Anchor.DUE,
      // Skipped occurrences stay skipped when the rule is kept.
      exdates: original?.recurrence?.rrule === rrule ? original.recurrence.exdates : [],
    });
  }
  return { task, errors };
}

/** `update_mask` paths (AIP-134) of what the draft changed against the original. */
function changedPaths(draft: Draft, original: Draft): string[] {
  const paths: string[] = [];
  if (draft.title !== original.title) paths.push("title");
  if (draft.description !== original.description) paths.push("description");
  if (draft.priority !== original.priority) paths.push("priority");
  const tags = (d: Draft) => JSON.stringify(d.tags.split(",").map((t) => t.trim()).filter(Boolean));
  if (tags(draft) !== tags(original)) paths.push("tags");
  const due = (d: Draft) => JSON.stringify([d.dueKind, d.dueKind === "time" ? d.dueTime : d.dueKind === "date" ? d.dueDate : ""]);
  if (due(draft) !== due(original)) paths.push("due");
  if (JSON.stringify(draft.reminders) !== JSON.stringify(original.reminders)) paths.push("reminders");
  const rule = (d: Draft) => JSON.stringify([d.repeat, d.repeat === "custom" ? d.rrule.trim() : "", d.repeat !== "none" && d.fromCompletion]);
  if (rule(draft) !== rule(original)) paths.push("recurrence");
  return paths;
}

/** Three-way merge of a draft: `current` wherever `edited` still equals `read`. */
function rebase(edited: Draft, read: Draft, current: Draft): Draft {
  const merged = { ...edited };
  for (const key of Object.keys(edited) as (keyof Draft)[]) {
    if (JSON.stringify(edited[key]) === JSON.stringify(read[key])) {
      (merged as Record<keyof Draft, unknown>)[key] = current[key];
    }
  }
  return merged;
}

/** Puts each server violation (`task.title`, `task.reminders[0].absolute_time`...) on its field. */
function place(list: Violation[]): Errors {
  const errors: Errors = {};
  for (const v of list) {
    const path = v.field.replace(/^task\./, "");
    const head = path.split(/[.[]/)[0] as Field;
    const field: Field = FIELDS.includes(head) ? head : "general";
    const detail = path !== head ? `${path}: ${v.description}` : v.description;
    (errors[field] ??= []).push(field === "general" ? `${v.field}: ${v.description}` : detail);
  }
  return errors;
}

const REMINDER_OFFSETS = [0, 5, 10, 15, 30, 60, 120, 1440].map((m) => m * 60000);

/** "15 min before", "1 day before", "30 s after"... */
function offsetLabel(beforeMs: number): string {
  if (beforeMs === 0) return "at the due";
  const ms = Math.abs(beforeMs);
  const units: [number, string][] = [
    [86400000, "day"],
    [3600000, "h"],
    [60000, "min"],
    [1000, "s"],
  ];
  const [size, unit] = units.find(([size]) => ms % size === 0) ?? [1000, "s"];
  const n = Math.round(ms / size);
  const amount = unit === "day" ? `${n} day${n > 1 ? "s" : ""}` : `${n} ${unit}`;
  return `${amount} ${beforeMs > 0 ? "before" : "after"}`;
}

function FieldErrors({ errors, field }: { errors: Errors; field: Field }) {
  const list = errors[field];
  if (!list?.length) return null;
  return (
    <ul class="field-errors" data-testid={`error-${field}`} role="alert">
      {list.map((e) => (
        <li key={e}>{e}</li>
      ))}
    </ul>
  );
}

/** The editor dialog; `task` undefined creates. Calls `onSaved` with the server's task. */
export function TaskEditor({
  api,
  task,
  deleted,
  onSaved,
  onClose,
}: {
  api: Api;
  /** The task as it is now (kept live while the editor is open); undefined creates. */
  task: Task | undefined;
  /** The task was deleted elsewhere while the editor was open. */
  deleted: boolean;
  onSaved: (task: Task) => void;
  onClose: () => void;
}) {
  // What the draft was read from: the diff base for `update_mask` and the `etag` that makes a
  // concurrent change elsewhere fail with ABORTED instead of being overwritten (AIP-154).
  const [base, setBase] = useState(() => ({ draft: draftOf(task), etag: task?.etag ?? "" }));
  const original = base.draft;
  const [draft, setDraft] = useState(original);
  const [errors, setErrors] = useState<Errors>({});
  const [busy, setBusy] = useState(false);
  // One request id per editor: a retried or double-clicked create makes one task (AIP-155).
  const [createId] = useState(requestId);
  const set = (patch: Partial<Draft>) => setDraft((d) => ({ ...d, ...patch }));
  const setReminder = (i: number, patch: Partial<ReminderDraft>) =>
    set({ reminders: draft.reminders.map((r, j) => (j === i ? { ...r, ...patch } : r)) });

  async function save(event: Event) {
    event.preventDefault();
    const paths = task ? changedPaths(draft, original) : [];
    const { task: next, errors: local } = taskOf(draft, task, !task || paths.includes("due"));
    if (Object.keys(local).length) {
      setErrors(local);
      return;
    }
    setBusy(true);
    setErrors({});
    try {
      if (!task) {
        const { task: created } = await api.tasks.createTask({ task: next, requestId: createId });
        if (created) onSaved(created);
      } else {
        if (paths.length === 0) return onClose();
        next.name = task.name;
        next.etag = base.etag;
        const { task: updated } = await api.tasks.updateTask({ task: next, updateMask: { paths } });
        if (updated) onSaved(updated);
      }
    } catch (err) {
      const list = violations(err);
      if (list.length) setErrors(place(list));
      else if (task && ConnectError.from(err).code === Code.Aborted) {
        // Rebase on the current version: fields the person left alone take the new values,
        // their edits stay in the form, and saving again applies them over the new version.
        const current = draftOf(task);
        setBase({ draft: current, etag: task.etag });
        setDraft((edited) => rebase(edited, original, current));
        setErrors({
          general: ["This task was changed on another device meanwhile. Your changes are still here; save again to apply them to the new version."],
        });
      } else setErrors({ general: [describe(err)] });
    } finally {
      setBusy(false);
    }
  }

  return (
    <div class="backdrop" onClick={(e) => e.target === e.currentTarget && onClose()}>
      <form class="editor" data-testid="editor" onSubmit={save} aria-label={task ? "Edit task" : "New task"}>
        <h2>{task ? "Edit task" : "New task"}</h2>
        {deleted && (
          <p class="field-errors" role="alert" data-testid="error-deleted">
            This task was deleted on another device.
          </p>
        )}
        <FieldErrors errors={errors} field="general" />
        <label>
          Title
          <input
            name="title"
            value={draft.title}
            onInput={(e) => set({ title: e.currentTarget.value })}
            autoFocus
            aria-invalid={!!errors.title}
          />
        </label>
        <FieldErrors errors={errors} field="title" />
        <label>
          Description
          <textarea name="description" rows={3} value={draft.description} onInput={(e) => set({ description: e.currentTarget.value })} />
        </label>
        <FieldErrors errors={errors} field="description" />
        <div class="row">
          <label>
            Priority
            <select name="priority" value={draft.priority} onChange={(e) => set({ priority: Number(e.currentTarget.value) })}>
              {priorities.map((p) => (
                <option key={p.value} value={p.value}>
                  {p.label}
                </option>
              ))}
            </select>
          </label>
          <label class="grow">
            Tags <small>(comma-separated)</small>
            <input name="tags" value={draft.tags} onInput={(e) => set({ tags: e.currentTarget.value })} aria-invalid={!!errors.tags} />
          </label>
        </div>
        <FieldErrors errors={errors} field="priority" />
        <FieldErrors errors={errors} field="tags" />
        <fieldset>
          <legend>Due</legend>
          <div class="row">
            <select name="due-kind" value={draft.dueKind} onChange={(e) => set({ dueKind: e.currentTarget.value as Draft["dueKind"] })}>
              <option value="none">No due date</option>
              <option value="time">At a time</option>
              <option value="date">All day</option>
            </select>
            {draft.dueKind === "time" && (
              <input type="datetime-local" name="due-time" value={draft.dueTime} onInput={(e) => set({ dueTime: e.currentTarget.value })} />
            )}
            {draft.dueKind === "date" && (
              <input type="date" name="due-date" value={draft.dueDate} onInput={(e) => set({ dueDate: e.currentTarget.value })} />
            )}
            {draft.dueKind !== "none" && <small class="zone">{viewerZone}</small>}
          </div>
          <FieldErrors errors={errors} field="due" />
        </fieldset>
        <fieldset>
          <legend>Reminders</legend>
          {draft.reminders.map((r, i) => (
            <div class="row" key={i} data-testid="reminder-row">
              <select value={r.kind} onChange={(e) => setReminder(i, { kind: e.currentTarget.value as ReminderDraft["kind"] })}>
                <option value="before">Before the due</option>
                <option value="at">At a time</option>
              </select>
              {r.kind === "before" ? (
                <select value={r.beforeMs} onChange={(e) => setReminder(i, { beforeMs: Number(e.currentTarget.value) })}>
                  {(REMINDER_OFFSETS.includes(r.beforeMs) ? REMINDER_OFFSETS : [...REMINDER_OFFSETS, r.beforeMs]).map((ms) => (
                    <option key={ms} value={ms}>
                      {offsetLabel(ms)}
                    </option>
                  ))}
                </select>
              ) : (
                <input type="datetime-local" step={1} name={`reminder-at-${i}`} value={r.at} onInput={(e) => setReminder(i, { at: e.currentTarget.value })} />
              )}
              <button type="button" class="link" onClick={() => set({ reminders: draft.reminders.filter((_, j) => j !== i) })}>
                Remove
              </button>
            </div>
          ))}
          <button
            type="button"
            class="link"
            onClick={() => set({ reminders: [...draft.reminders, { id: "", kind: draft.dueKind === "none" ? "at" : "before", beforeMs: 15 * 60000, at: "" }] })}
          >
            Add reminder
          </button>
          <FieldErrors errors={errors} field="reminders" />
        </fieldset>
        <fieldset>
          <legend>Repeat</legend>
          <div class="row">
            <select name="repeat" value={draft.repeat} onChange={(e) => set({ repeat: e.currentTarget.value as Repeat })}>
              <option value="none">Does not repeat</option>
              <option value="daily">Every day</option>
              <option value="weekdays">Every weekday</option>
              <option value="weekly">Every week</option>
              <option value="monthly">Every month</option>
              <option value="yearly">Every year</option>
              <option value="custom">Custom rule (RRULE)</option>
            </select>
            {draft.repeat === "custom" && (
              <input
                name="rrule"
                class="grow"
                placeholder="FREQ=MONTHLY;BYDAY=-1FR"
                value={draft.rrule}
                onInput={(e) => set({ rrule: e.currentTarget.value })}
              />
            )}
          </div>
          {draft.repeat !== "none" && (
            <label class="inline">
              <input type="checkbox" checked={draft.fromCompletion} onChange={(e) => set({ fromCompletion: e.currentTarget.checked })} />
              Count from when it is done
            </label>
          )}
          <FieldErrors errors={errors} field="recurrence" />
        </fieldset>
        <div class="actions">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" class="primary" disabled={busy || deleted}>
            {task ? "Save" : "Create"}
          </button>
        </div>
      </form>
    </div>
  );
}
