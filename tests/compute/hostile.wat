;; A minimal module honouring the AO loader contract, whose handler misbehaves on request.
;; handle() dispatches on the 12th byte of the message JSON, i.e. X in {"Action":"X"}.
(module
  (memory (export "memory") 2)
  (global $sp (mut i32) (i32.const 65536))
  (data (i32.const 1024) "{\"ok\":true,\"response\":{\"Output\":\"ok\",\"Messages\":[],\"Spawns\":[],\"Assignments\":[]}}\00")
  (data (i32.const 1200) "{\"ok\":false,\"response\":\"handler failed\"}\00")
  (func (export "emscripten_stack_get_current") (result i32) (global.get $sp))
  (func (export "_emscripten_stack_alloc") (param $n i32) (result i32)
    (global.set $sp (i32.and (i32.sub (global.get $sp) (local.get $n)) (i32.const -16)))
    (global.get $sp))
  (func (export "_emscripten_stack_restore") (param $v i32) (global.set $sp (local.get $v)))
  (func $bump (i32.store (i32.const 2048) (i32.add (i32.load (i32.const 2048)) (i32.const 1))))
  (func (export "handle") (param $msg i32) (param $env i32) (result i32)
    (local $op i32)
    (local.set $op (i32.load8_u (i32.add (local.get $msg) (i32.const 11))))
    (call $bump)
    ;; E: succeed
    (if (i32.eq (local.get $op) (i32.const 69)) (then (return (i32.const 1024))))
    ;; L: loop forever
    (if (i32.eq (local.get $op) (i32.const 76)) (then (loop $l (br $l))))
    ;; G: grow memory until refused, then trap
    (if (i32.eq (local.get $op) (i32.const 71))
      (then (loop $g (br_if $g (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) (unreachable)))
    ;; T: trap after changing state
    (if (i32.eq (local.get $op) (i32.const 84)) (then (unreachable)))
    ;; H: return an unterminated 2 MiB string
    (if (i32.eq (local.get $op) (i32.const 72))
      (then
        (drop (memory.grow (i32.const 40)))
        (memory.fill (i32.const 131072) (i32.const 97) (i32.const 2097152))
        (return (i32.const 131072))))
    ;; F: ok=false
    (i32.const 1200))
)
