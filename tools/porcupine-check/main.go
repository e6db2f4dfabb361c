// Command porcupine-check judges a register history with Porcupine, the Go
// linearizability checker etcd's robustness tests use, so that pytest-operator's
// own checker (pytest_operator/_linearizable.py) can be compared against it: verdicts
// in tests/checkers/test_porcupine_crosscheck.py, time in benchmarks/bench_checker.py.
//
// Input (stdin), one JSON document, ops already partitioned by key:
//
//	{"keys": {"k1": {"initial": null, "ops": [
//	    {"client": 0, "kind": "write", "value": "1", "expected": null, "result": null,
//	     "status": "ok", "call": 1000, "return": 2000}, ...]}}}
//
// kind is read, write or cas; values are strings or null (null: the key is absent).
// status is "ok" (a read returned result, a write wrote value, a CAS matched expected
// and wrote value), "fail" (a CAS whose compare failed while the register held result)
// or "unknown" (indeterminate: the op may take effect at any time after call, or
// never; its return is math.MaxInt64, as Porcupine advises). Ops that surely had no
// effect are left out by the caller. Times are int64 nanoseconds.
//
// Output (stdout): {"ok": bool, "result": "Ok"|"Illegal"|"Unknown", "elapsed_s": s,
// "per_key": {"k1": {"result": "Ok", "ops": n, "elapsed_s": s}}}. Keys are checked one
// after another on one goroutine (so the time compares with a single-threaded
// checker); -timeout bounds the whole run, and a key it cuts short is "Unknown".
// Exit status: 0 when a verdict was printed (whatever it is), 2 on bad input.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"sort"
	"time"

	"github.com/anishathalye/porcupine"
)

type inputOp struct {
	Client   int     `json:"client"`
	Kind     string  `json:"kind"`
	Value    *string `json:"value"`
	Expected *string `json:"expected"`
	Result   *string `json:"result"`
	Status   string  `json:"status"`
	Call     int64   `json:"call"`
	Return   int64   `json:"return"`
}

type inputKey struct {
	Initial *string   `json:"initial"`
	Ops     []inputOp `json:"ops"`
}

type inputHistory struct {
	Keys map[string]inputKey `json:"keys"`
}

// value is a register's content: absent, or a string. Comparable, so states compare with ==.
type value struct {
	set bool
	v   string
}

func valueOf(s *string) value {
	if s == nil {
		return value{}
	}
	return value{set: true, v: *s}
}

func (x value) String() string {
	if !x.set {
		return "nil"
	}
	return fmt.Sprintf("%q", x.v)
}

type opKind uint8

const (
	read opKind = iota
	write
	cas
)

type input struct {
	kind     opKind
	value    value // write: the value written; cas: the new value
	expected value // cas: the value compared against
}

type status uint8

const (
	ok status = iota
	fail
	unknown
)

type output struct {
	status status
	result value // read: the value returned; failed cas: the value the register held
}

// register is one key's sequential specification: read / write / compare-and-set.
func register(initial value) porcupine.Model {
	return porcupine.Model{
		Init: func() interface{} { return initial },
		Step: func(state, in, out interface{}) (bool, interface{}) {
			st := state.(value)
			i := in.(input)
			o := out.(output)
			switch i.kind {
			case read:
				return o.status == unknown || st == o.result, st
			case write:
				return true, i.value
			default: // cas
				matched := st == i.expected
				switch o.status {
				case ok:
					return matched, i.value
				case fail:
					return !matched && st == o.result, st
				default: // unknown: takes effect only if the compare would match
					if matched {
						return true, i.value
					}
					return true, st
				}
			}
		},
		Hash: func(state interface{}) uint64 {
			st := state.(value)
			h := fnv.New64a()
			if st.set {
				_, _ = io.WriteString(h, "s")
				_, _ = io.WriteString(h, st.v)
			}
			return h.Sum64()
		},
		DescribeOperation: func(in, out interface{}) string {
			i := in.(input)
			o := out.(output)
			switch i.kind {
			case read:
				return fmt.Sprintf("read() -> %v", o.result)
			case write:
				return fmt.Sprintf("write(%v)", i.value)
			default:
				return fmt.Sprintf("cas(%v, %v) -> %v %v", i.expected, i.value, o.status, o.result)
			}
		},
		DescribeState: func(state interface{}) string { return state.(value).String() },
	}
}

func operations(ops []inputOp) ([]porcupine.Operation, error) {
	out := make([]porcupine.Operation, 0, len(ops))
	for n, op := range ops {
		var in input
		switch op.Kind {
		case "read":
			in = input{kind: read}
		case "write":
			if op.Value == nil {
				return nil, fmt.Errorf("op %d: a write needs a value", n)
			}
			in = input{kind: write, value: valueOf(op.Value)}
		case "cas":
			if op.Value == nil {
				return nil, fmt.Errorf("op %d: a cas needs a new value", n)
			}
			in = input{kind: cas, value: valueOf(op.Value), expected: valueOf(op.Expected)}
		default:
			return nil, fmt.Errorf("op %d: kind %q is not read, write or cas", n, op.Kind)
		}
		var o output
		switch op.Status {
		case "ok":
			o = output{status: ok, result: valueOf(op.Result)}
		case "fail":
			if in.kind != cas {
				return nil, fmt.Errorf("op %d: only a cas can fail (a failed %s had no effect: leave it out)", n, op.Kind)
			}
			o = output{status: fail, result: valueOf(op.Result)}
		case "unknown":
			o = output{status: unknown}
		default:
			return nil, fmt.Errorf("op %d: status %q is not ok, fail or unknown", n, op.Status)
		}
		if op.Return < op.Call {
			return nil, fmt.Errorf("op %d: returns (%d) before its call (%d)", n, op.Return, op.Call)
		}
		out = append(out, porcupine.Operation{
			ClientId: op.Client, Input: in, Call: op.Call, Output: o, Return: op.Return,
		})
	}
	return out, nil
}

type keyResult struct {
	Result  porcupine.CheckResult `json:"result"`
	Ops     int                   `json:"ops"`
	Elapsed float64               `json:"elapsed_s"`
}

type report struct {
	Ok      bool                  `json:"ok"`
	Result  porcupine.CheckResult `json:"result"`
	Elapsed float64               `json:"elapsed_s"`
	PerKey  map[string]keyResult  `json:"per_key"`
}

func run(stdin io.Reader, stdout io.Writer, timeout time.Duration) error {
	var history inputHistory
	decoder := json.NewDecoder(stdin)
	decoder.DisallowUnknownFields()
	if err := decoder.Decode(&history); err != nil {
		return fmt.Errorf("reading the history: %w", err)
	}
	names := make([]string, 0, len(history.Keys))
	parsed := make(map[string][]porcupine.Operation, len(history.Keys))
	for name, key := range history.Keys {
		ops, err := operations(key.Ops)
		if err != nil {
			return fmt.Errorf("key %q: %w", name, err)
		}
		names = append(names, name)
		parsed[name] = ops
	}
	sort.Strings(names)
	rep := report{Ok: true, Result: porcupine.Ok, PerKey: make(map[string]keyResult, len(names))}
	began := time.Now()
	var deadline time.Time
	if timeout > 0 {
		deadline = began.Add(timeout)
	}
	for _, name := range names {
		left := time.Duration(0)
		if timeout > 0 {
			left = time.Until(deadline)
			if left <= 0 {
				rep.PerKey[name] = keyResult{Result: porcupine.Unknown, Ops: len(parsed[name])}
				continue
			}
		}
		keyBegan := time.Now()
		model := register(valueOf(history.Keys[name].Initial))
		result := porcupine.CheckOperationsTimeout(model, parsed[name], left)
		rep.PerKey[name] = keyResult{
			Result: result, Ops: len(parsed[name]), Elapsed: time.Since(keyBegan).Seconds(),
		}
	}
	rep.Elapsed = time.Since(began).Seconds()
	for _, name := range names {
		switch rep.PerKey[name].Result {
		case porcupine.Illegal:
			rep.Result = porcupine.Illegal
		case porcupine.Unknown:
			if rep.Result == porcupine.Ok {
				rep.Result = porcupine.Unknown
			}
		}
	}
	rep.Ok = rep.Result == porcupine.Ok
	return json.NewEncoder(stdout).Encode(rep)
}

func main() {
	timeout := flag.Duration("timeout", 60*time.Second, "bound on the whole check (0: none); keys cut short are Unknown")
	flag.Parse()
	if flag.NArg() != 0 {
		fmt.Fprintf(os.Stderr, "porcupine-check: no arguments expected (the history comes on stdin), got %q\n", flag.Args())
		os.Exit(2)
	}
	if err := run(os.Stdin, os.Stdout, *timeout); err != nil {
		fmt.Fprintf(os.Stderr, "porcupine-check: %v\n", err)
		os.Exit(2)
	}
}
