export { Registration, type BatchEntryResult, type RegistrationOptions } from './registration.js';
export { type EntryInput, type EntryJson, type ListEntriesInput, entryToJson } from './json.js';
export {
  DEFAULT_LIMITS, MAX_HINT_LENGTH, type RegistrationLimits, dnsNameError, entryForServiceAccount,
} from './validate.js';
