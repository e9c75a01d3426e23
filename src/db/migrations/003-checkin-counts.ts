/**
 * listCheckInLists counts each list's admissions; the UNIQUE (ticketId, checkInListId) index
 * cannot find them by list, so without this every count would read every admission.
 */
export const up = `
    CREATE INDEX checkIn_list ON checkIn (checkInListId);
`
