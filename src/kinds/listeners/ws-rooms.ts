/**
 * The clients of a websocket path with parameters, grouped by their values: a "room" is the clients
 * of one concrete path (`/rooms/a` of `/rooms/:room`). A forward to `/rooms/:room` of a message
 * that carries its own `room` path parameter (published on `/room/:room`, over HTTP or a
 * WebSocket) goes to that room only (docs/config.md, `to: {listener}`: a forward path's
 * parameters are filled from the message's); a message without it (consumed from a broker) goes
 * to every client of the path, as the path's own batch (write-batch.ts) sends it.
 *
 * A room is found by one lookup per message and target, whatever the number of clients, and has a
 * batch of its own: the turn's frames for it are joined once and written to each of its clients
 * with one write, as for a whole path. A client is in its path's batch and its room's; the
 * listener keeps at most one of them pending (it writes the other out first), so a client gets
 * the frames in the order they were queued.
 */
import { PathBatch, type BatchClient } from './write-batch.js';
import { writeFrames, type FramedClient } from './ws-frames.js';
import { pathParameters } from './route-paths.js';

/** What a room needs of a client. */
export interface RoomClient extends FramedClient {
  /** The route path it connected to, as the bindings spell it: its key. */
  readonly path: string;
  /** That path's parameters, by name. */
  readonly params: Record<string, string>;
  /** Its place in its room; set while it is in one. */
  member: RoomMember | undefined;
}

/** The clients of one concrete path. */
export interface Room {
  /** Its key among its path's rooms (`JSON.stringify(values)`). */
  readonly key: string;
  /** The parameter values, in the path's order. */
  readonly values: readonly string[];
  readonly members: Set<RoomMember>;
  batch: PathBatch<RoomMember, Buffer> | undefined;
}

/** A client in its room: the room's batch keeps the client's place in it here (its path's batch keeps it on the client). */
export class RoomMember implements BatchClient {
  batchSkip = 0;
  batchEpoch = -1;
  constructor(
    readonly client: RoomClient,
    readonly room: Room,
  ) {}
}

function writeToMember(m: RoomMember, bytes: Buffer, payloads: readonly Buffer[], from: number): void {
  writeFrames(m.client, bytes, payloads, from);
}

export class ForwardRooms {
  /** Route path → room key → room; a room goes when its last client leaves. */
  private readonly byPath = new Map<string, Map<string, Room>>();
  /** Route path → its rooms that had frames queued since frames were last queued for all its clients. */
  private readonly pending = new Map<string, Set<Room>>();

  /** The parameter names of a route path, in order. */
  namesOf(path: string): readonly string[] {
    return pathParameters(path);
  }

  /** A client of a path with parameters joins its room (made when it is the first). */
  join(c: RoomClient): RoomMember | undefined {
    const names = this.namesOf(c.path);
    if (names.length === 0) return undefined;
    const values = names.map((n) => c.params[n] ?? '');
    const key = JSON.stringify(values);
    let rooms = this.byPath.get(c.path);
    if (!rooms) this.byPath.set(c.path, (rooms = new Map()));
    let room = rooms.get(key);
    if (!room) rooms.set(key, (room = { key, values, members: new Set(), batch: undefined }));
    const member = new RoomMember(c, room);
    room.members.add(member);
    room.batch?.joined(member);
    c.member = member;
    return member;
  }

  leave(c: RoomClient): void {
    const member = c.member;
    if (!member) return;
    c.member = undefined;
    const room = member.room;
    room.members.delete(member);
    if (room.members.size > 0) return;
    const rooms = this.byPath.get(c.path);
    if (rooms?.get(room.key) === room) rooms.delete(room.key);
    if (rooms?.size === 0) this.byPath.delete(c.path);
    // (So the pending rooms of a path that gets no frames for all its clients are its rooms at most.)
    this.pending.get(c.path)?.delete(room);
  }

  /**
   * The rooms of route path `path` a message goes to through forward path parameters `names`
   * (positionally the route path's: a forward path spelled differently matches the same
   * requests), given the message's own path parameters: undefined when it carries none of those
   * names (every client of the path); else the rooms whose values equal every one it carries, by
   * exact comparison of the decoded values (`a/b`, `..` and `` are rooms of their own).
   */
  select(path: string, names: readonly string[], params: Record<string, string> | undefined): Room[] | undefined {
    if (params === undefined || names.length === 0) return undefined;
    let carried = 0;
    const values: (string | undefined)[] = [];
    for (const n of names) {
      const v = Object.hasOwn(params, n) ? params[n] : undefined;
      if (typeof v === 'string') carried++;
      values.push(typeof v === 'string' ? v : undefined);
    }
    if (carried === 0 || names.length !== this.namesOf(path).length) return undefined;
    const rooms = this.byPath.get(path);
    if (!rooms) return [];
    if (carried === names.length) {
      const room = rooms.get(JSON.stringify(values));
      return room ? [room] : [];
    }
    // Some of the parameters only (a warning at load): every room with those values.
    const out: Room[] = [];
    for (const room of rooms.values()) if (values.every((v, i) => v === undefined || v === room.values[i])) out.push(room);
    return out;
  }

  /** Queues a frame for a room's clients, written at the end of the turn. */
  queue(path: string, room: Room, frame: Buffer, payload: Buffer): void {
    room.batch ??= new PathBatch<RoomMember, Buffer>(() => room.members, writeToMember);
    room.batch.queue(frame, payload);
    let pending = this.pending.get(path);
    if (!pending) this.pending.set(path, (pending = new Set()));
    pending.add(room);
  }

  /** Writes out now what is queued for the rooms of `path` (before frames for the whole path are queued). */
  flushPath(path: string): void {
    const pending = this.pending.get(path);
    if (!pending) return;
    this.pending.delete(path);
    for (const room of pending) room.batch?.flush();
  }

  /** Writes out now what is queued for one client's room (before an answer to it, or its close). */
  flushClient(c: RoomClient): void {
    const member = c.member;
    if (member) member.room.batch?.flushClient(member);
  }

  flushAll(): void {
    for (const path of [...this.pending.keys()]) this.flushPath(path);
  }
}
